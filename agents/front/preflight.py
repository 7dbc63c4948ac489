"""`avatarcast preflight -c CONFIG`: before going live, check everything that can be checked.

The models load (voices, avatars, speech recognition, the LLM), every configured channel fits
at its frame rate next to the others (the same measurement admission control makes at start),
the port is free and the outputs answer (RTMP ingests, OBS, IRC: a TCP connection each, bounded
in time). It prints one line per check and what to do about each failure; nothing goes on air.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agents.config import LLMConfig, StudioConfig
from agents.front.placement import describe
from agents.worker.studio import Studio, load_llm

CONNECT_TIMEOUT_S = 3.0


@dataclass(slots=True)
class Check:
    what: str
    ok: bool
    detail: str


async def _tcp(host: str, port: int) -> str:
    """'' when a TCP connection opens within the timeout, else why not."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return f"cannot connect to {host}:{port} ({type(exc).__name__}: {exc or 'timed out'})"
    writer.close()
    return ""


def port_problem(host: str, port: int) -> str:
    """'' when the studio could listen on host:port, else why not and the fix (serve checks it too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"{host}:{port}: {exc.strerror}; fix: free the port, or choose another with --port or server.port"
    return ""


def llm_memory(cfg: LLMConfig, say: Callable[[str], None]) -> str:
    """Say what the configured model will take in memory (models/llm_memory.py: weights by dtype or
    quantization, and the KV cache); '' when it fits, else why not, before minutes go into loading it."""
    from models.defaults import default_llm_dir
    from models.llm_memory import estimate_for_folder

    model_dir = default_llm_dir() if cfg.model == "builtin:smollm2" else Path(cfg.model)
    if not (model_dir / "config.json").is_file():
        return ""  # loading says what is missing, with the fix
    gpu_total = None
    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not _cuda_available())
    if not on_cpu:
        import torch

        index = int(cfg.device.split(":")[1]) if ":" in cfg.device else 0
        gpu_total = float(torch.cuda.get_device_properties(index).total_memory)
    memory = estimate_for_folder(
        model_dir,
        dtype=cfg.dtype,
        quantization=cfg.quantization,
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        kv_cache_gib=cfg.kv_cache_gib if on_cpu else None,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_total_bytes=gpu_total,
    )
    say(f"        LLM memory: {memory.describe()}")
    return memory.problem()


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


async def preflight(cfg: StudioConfig, say: Callable[[str], None]) -> list[Check]:
    checks: list[Check] = []

    async def check(what: str, probe: Callable[[], Awaitable[str]]) -> None:
        t0 = time.monotonic()
        try:
            problem = await probe()
        except Exception as exc:  # a check that breaks is a failed check, reported like the others
            problem = f"{type(exc).__name__}: {exc}"
        result = Check(what, not problem, problem or f"ok ({time.monotonic() - t0:.1f} s)")
        checks.append(result)
        say(f"  {'ok  ' if result.ok else 'FAIL'}  {what}: {result.detail}")

    async def port() -> str:
        return port_problem(cfg.server.host, cfg.server.port)

    say("avatarcast preflight")
    lines, problems = describe(cfg)
    for line in lines:
        say(f"  where: {line}")

    async def devices() -> str:
        return "; ".join(problems)

    await check("devices", devices)
    await check(f"port {cfg.server.port}", port)
    if problems:  # nothing can load on a device that is not there
        say(f"{sum(c.ok for c in checks)} of {len(checks)} checks passed; fix the FAIL lines")
        return checks
    studio = Studio(cfg)
    try:
        studio.admission.lag.start()

        async def asr() -> str:
            from models.asr_whisper import WhisperASR

            await asyncio.to_thread(WhisperASR.load, cfg.asr.model, device=cfg.asr.device)
            return ""

        await check(f"speech recognition ({cfg.asr.model})", asr)
        for ch in cfg.channels:

            async def channel(ch=ch) -> str:  # type: ignore[no-untyped-def]
                built = await studio.build_channel(ch, starting=True)  # loads voice and avatar, measures, admits
                studio.channels[ch.name] = built  # counted as running for the next channel's check
                d = studio.demands[ch.name]
                say(f"        renders in {d.render_s * 1000:.1f} ms, encodes in {d.encode_s * 1000:.1f} ms a frame")
                return ""

            await check(
                f"channel {ch.name} ({ch.avatar.pack}, {ch.video.width}x{ch.video.height}@{ch.video.fps})", channel
            )
            for target in ch.outputs.rtmp:
                url = urlsplit(target.url)

                async def rtmp(url=url) -> str:  # type: ignore[no-untyped-def]
                    return await _tcp(url.hostname or "", url.port or 1935)

                await check(f"channel {ch.name}: RTMP {target.url}/***", rtmp)
        capacity = studio.admission.budgets(list(studio.demands.values()))
        say(f"  capacity: renderer {capacity['render_used']:.0%} of {capacity['render_limit']:.0%}, "
            f"CPU {capacity['cpu_used']:.2f} of {capacity['cpu_limit']:.2f} s/s")  # fmt: skip

        async def llm() -> str:
            if cfg.llm.backend == "openai":  # a remote server: is it there?
                url = urlsplit(cfg.llm.base_url or "")
                return await _tcp(url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
            if problem := llm_memory(cfg.llm, say):
                return problem
            engine = await load_llm(cfg.llm)
            aclose = getattr(engine, "aclose", None)
            if aclose is not None:
                await aclose()
            return ""

        await check(f"LLM ({cfg.llm.backend}, {cfg.llm.model})", llm)
        if cfg.obs is not None:
            obs = cfg.obs

            async def obs_port() -> str:
                return await _tcp(obs.host, obs.port)

            await check(f"OBS websocket {obs.host}:{obs.port}", obs_port)
        if cfg.irc is not None:
            irc = cfg.irc

            async def irc_port() -> str:
                return await _tcp(irc.host, irc.port)

            await check(f"IRC {irc.host}:{irc.port}", irc_port)
    finally:
        await studio.aclose()
    failed = [c for c in checks if not c.ok]
    say(f"{len(checks) - len(failed)} of {len(checks)} checks passed" + ("" if not failed else "; fix the FAIL lines"))
    return checks
