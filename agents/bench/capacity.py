"""How many talking channels this box holds: a short estimate from real channels, what admission would
admit, and (on request) the real count.

The estimate runs SAMPLE_CHANNELS real talking channels for a few seconds (bench/channel_level.py's
LevelRunner, as bench/channels.py runs a level: real Channels, their Programs, encoders and the
shared lip-sync service) and scales what each costs, in CPU cores and in share of the one render
thread, up to admission.max_utilisation of each. It includes what a running channel really costs
beyond its frames (its Program, encoder thread, packets and the GIL hand-offs between them), which
the isolated frame costs leave out: admission's own rule applied to those (agents/worker/admission.py,
what a studio would admit) is shown beside it, and is much higher on a CPU. With --measure-channels,
bench/channels.py's own search adds channels until a level no longer holds 25 fps.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import asdict
from typing import Any

from agents.bench.video import MAX_CHANNELS, Say, module_bench, pack_of, video_format
from agents.config import StudioConfig
from agents.worker.admission import Admission, AdmissionRefused, Demand

SAMPLE_CHANNELS = 2
"""Real talking channels run for the short estimate (few enough to hold on any machine)."""

HOW = (
    "Estimated, from {n} real talking channels ({w}x{h}, the drawn pack or the config's, speech made in advance) "
    "run for {s:g} s: the CPU cores and the share of the render thread each one used, scaled up until either "
    "reaches admission.max_utilisation ({u:.0%}); 'with voices' adds the voice's real-time factor per channel "
    "for speech synthesised all the time. ASR and the LLM are left out (a viewer's question costs them once). "
    "'Admission would admit' is admission's own rule on the isolated frame costs (render at its typical "
    "batch + encode), what a studio admits today; a running channel costs more than its frames alone."
)


def scale_up(per_channel_cpu: float, per_channel_render: float, cores: int, max_utilisation: float) -> tuple[int, str]:
    """Channels like the sampled ones that fit under admission's limits -> (count, the budget that stops it)."""
    by_cores = max_utilisation * cores / per_channel_cpu if per_channel_cpu > 0 else float(MAX_CHANNELS)
    by_render = max_utilisation / per_channel_render if per_channel_render > 0 else float(MAX_CHANNELS)
    limit = "renderer thread" if by_render < by_cores else "CPU cores"
    return min(MAX_CHANNELS, int(min(by_cores, by_render) + 1e-9)), limit


def admitted(cfg: StudioConfig, render_s: float, encode_s: float, cores: int) -> int:
    """Channels admission's rule would take at these per-frame costs (added while it takes one more)."""
    fps = video_format(cfg).fps
    admission = Admission(
        max_utilisation=cfg.admission.max_utilisation, max_loop_lag_ms=cfg.admission.max_loop_lag_ms, cores=cores
    )
    running: list[Demand] = []
    while len(running) < MAX_CHANNELS:
        demand = Demand(f"c{len(running)}", fps, render_s, encode_s)
        try:
            admission.check(demand, running, 0.0)
        except AdmissionRefused:
            break
        running.append(demand)
    return len(running)


def by_admission(
    cfg: StudioConfig, render_ms: float, encode_ms: float, cores: int, rtf: float | None
) -> dict[str, Any]:
    fps = video_format(cfg).fps
    render_s, encode_s = render_ms / 1000, encode_ms / 1000
    voiced = admitted(cfg, render_s, encode_s + rtf / fps, cores) if rtf is not None else None
    fmt = video_format(cfg)
    return {"channels": admitted(cfg, render_s, encode_s, cores), "channels_with_voice": voiced,
            "render_ms": render_ms, "encode_ms": encode_ms, "fps": fps, "size": list(fmt.size)}  # fmt: skip


async def sampled(cfg: StudioConfig, device: str, seconds: float, cores: int, rtf: float | None) -> dict[str, Any]:
    """The short estimate (see the module's docstring)."""
    from models.lipsync.service import LipSyncService
    from models.tts_piper import PiperTTS

    level_bench = module_bench("channel_level")
    tts = await asyncio.to_thread(PiperTTS.load, None)
    service = LipSyncService(device, max_batch=cfg.lipsync.max_batch, sprite_kernel=cfg.lipsync.kernel)
    runner = level_bench.LevelRunner(service, tts, await level_bench.presynthesise(tts), True, pack_of(cfg))
    try:
        await runner.resize(SAMPLE_CHANNELS)
        level = await runner.measure(min(2.0, seconds), seconds)
    finally:
        await runner.aclose()
        await service.aclose()
    cpu, render = level.cpu_cores / level.channels, level.render_busy / level.channels
    util = cfg.admission.max_utilisation
    count, limit = scale_up(cpu, render, cores, util)
    size = level_bench.SIZE
    return {
        "channels": count,
        "channels_with_voice": scale_up(cpu + rtf, render, cores, util)[0] if rtf is not None else None,
        "limited_by": limit,
        "cpu_per_channel": cpu,
        "render_per_channel": render,
        "cores": cores,
        "max_utilisation": util,
        "size": [size, size],
        "seconds": seconds,
        "level": asdict(level),
        "how": HOW.format(n=SAMPLE_CHANNELS, w=size, h=size, s=seconds, u=util),
    }


async def measured(cfg: StudioConfig, device: str, seconds: float, max_channels: int, say: Say) -> dict[str, Any]:
    """Talking channels that really hold 25 fps: bench/channels.py's own search at its size."""
    from models.tts_piper import PiperTTS

    search = module_bench("channels").Search(argparse.Namespace(
        json=True, workers=1, gpu_service=False, max_channels=max_channels, start=2, step=2, seconds=seconds,
        warmup=min(3.0, seconds), device=device, pack=pack_of(cfg), lipsync=None, checkpoint=None,
    ))  # fmt: skip
    search.say = lambda line: say(f"      {line.strip()}")
    tts = await asyncio.to_thread(PiperTTS.load, None)
    held, levels = await search.in_process("talking", tts)
    size = module_bench("channel_level").SIZE
    return {"channels": held, "size": [size, size], "levels": [asdict(lv) for lv in levels]}
