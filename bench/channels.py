"""How many channels one box holds at 25 fps: idle, and all talking, with cross-channel batching on and off.

    python bench/channels.py [--json] [--workers N] [--device auto|cpu|cuda] [--max-channels 16] [--seconds 8]

A level holds when every channel's frames reach its encoder at >= 98 % of 25 fps, the p99 interval
between consecutive frames of a channel is <= 60 ms, and no frame missed its deadline (no frame
repeated late by the Program, no lip-sync job done after its frame aired, no frame dropped at the
encoder). Each level runs real channels (bench/channel_level.py): in this process (--workers 1), or
spread over N processes as the studio's media workers spread them, each drawing its own frames or,
with a GPU (or --gpu-service), all drawn by one GPU service process (models/lipsync/server.py) that
batches every worker's frames together. The search adds channels `--step` at a time while levels
hold, then bisects between the last level that held and the first that did not. The JSON's
talking_channels, idle_channels and talking_channels_unbatched are those largest levels; each level
also records the processes' CPU use, the GPU's utilisation (nvidia-smi, where there is one) and the
I420 frame bandwidth into host memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench.channel_level, run from anywhere
from bench.channel_level import FPS, MIN_FPS, P99_LIMIT_MS, Level, LevelRunner, level_from, presynthesise  # noqa: E402
from models.lipsync.service import LipSyncService, NeuralModel  # noqa: E402
from models.tts_piper import PiperTTS  # noqa: E402
from stream.clock import AUDIO_RATE  # noqa: E402

MODES = {
    "idle": (False, True, "idle_channels"),
    "talking": (True, True, "talking_channels"),
    "talking_unbatched": (True, False, "talking_channels_unbatched"),
}
"""mode -> (talking, batching, the JSON key of its result)."""


class Search:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        out = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON alone
        self.say = lambda line: print(line, file=out, flush=True)

    async def levels(self, mode: str, measure: Any) -> tuple[int, list[Level]]:
        """The largest channel count that holds in `mode` (0 if even the first level fails)."""
        held, failed, found = 0, None, []
        n = min(self.args.start, self.args.max_channels)
        while True:
            level = await measure(n)
            found.append(level)
            self.say(f"  {mode:18s} {row(level)}")
            if level.ok:
                held = n
            else:
                failed = n
            if failed is None:
                if n >= self.args.max_channels:
                    break
                n = min(n + self.args.step, self.args.max_channels)
            elif failed - held > 1:
                n = (held + failed) // 2
            else:
                break
        return held, found

    async def in_process(self, mode: str, tts: PiperTTS) -> tuple[int, list[Level]]:
        talking, batching, _ = MODES[mode]
        args = self.args
        neural = NeuralModel(args.lipsync, Path(args.checkpoint)) if args.lipsync else None
        service = LipSyncService(args.device, batching=batching, neural=neural)
        runner = LevelRunner(service, tts, await presynthesise(tts), talking, args.pack)

        async def measure(n: int) -> Level:
            await runner.resize(n)
            return await runner.measure(self.args.warmup, self.args.seconds)

        try:
            return await self.levels(mode, measure)
        finally:
            await runner.aclose()
            await runner.service.aclose()

    async def in_workers(self, mode: str, gpu_socket: str | None) -> tuple[int, list[Level]]:
        talking, _, _ = MODES[mode]

        async def measure(n: int) -> Level:
            shares = [n // self.args.workers + (i < n % self.args.workers) for i in range(self.args.workers)]
            sampler = asyncio.create_task(gpu_utilisation(self.args.warmup + 2.0))
            results = await asyncio.gather(*(self._process(k, talking, gpu_socket) for k in shares if k))
            return combine(results, await sampler)

        return await self.levels(mode, measure)

    async def _process(self, channels: int, talking: bool, gpu_socket: str | None) -> Level:
        args = self.args
        command = [sys.executable, "-m", "bench.channel_level", "--channels", str(channels), "--device",
                   args.device, "--seconds", str(args.seconds), "--warmup", str(args.warmup)]  # fmt: skip
        command += ["--talking"] if talking else []
        command += ["--pack", args.pack]
        command += ["--lipsync", args.lipsync, "--checkpoint", args.checkpoint] if args.lipsync else []
        command += ["--gpu-socket", gpu_socket] if gpu_socket else []
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a bench worker with {channels} channels failed ({process.returncode})")
        return level_from(json.loads(out))


def combine(levels: list[Level], gpu_util: float | None) -> Level:
    """The levels of the worker processes as one: the worst channel's figures, everyone's totals."""
    frames = [lv.channels for lv in levels]
    return Level(
        channels=sum(frames),
        fps_min=min(lv.fps_min for lv in levels),
        p99_ms=max(lv.p99_ms for lv in levels),
        max_ms=max(lv.max_ms for lv in levels),
        late_frames=sum(lv.late_frames for lv in levels),
        deadline_misses=sum(lv.deadline_misses for lv in levels),
        dropped_frames=sum(lv.dropped_frames for lv in levels),
        rejected_jobs=sum(lv.rejected_jobs for lv in levels),
        mean_batch_frames=round(max(lv.mean_batch_frames for lv in levels), 2),
        render_busy=max(lv.render_busy for lv in levels),
        encode_ms_per_frame=round(sum(lv.encode_ms_per_frame * lv.channels for lv in levels) / sum(frames), 2),
        cpu_cores=round(sum(lv.cpu_cores for lv in levels), 2),
        load_1m=max(lv.load_1m for lv in levels),
        workers=len(levels),
        host_frame_gbps=round(sum(lv.host_frame_gbps for lv in levels), 3),
        gpu_util_pct=gpu_util,
    )


async def gpu_utilisation(after_s: float) -> float | None:
    """nvidia-smi's GPU utilisation, sampled through a level's measuring window (None without one)."""
    if shutil.which("nvidia-smi") is None:
        return None
    await asyncio.sleep(after_s)
    samples = []
    for _ in range(8):
        process = await asyncio.create_subprocess_exec(
            "nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        with contextlib.suppress(ValueError):
            samples.append(float(out.split()[0]))
        await asyncio.sleep(0.5)
    return round(sum(samples) / len(samples), 1) if samples else None


def row(level: Level) -> str:
    verdict = "holds" if level.ok else "FAILS"
    gpu = f"  gpu {level.gpu_util_pct:.0f}%" if level.gpu_util_pct is not None else ""
    return (
        f"{level.channels:3d} channels ({level.workers} proc): fps min {level.fps_min:5.2f}  p99 {level.p99_ms:5.1f} ms"
        f"  max {level.max_ms:6.1f} ms  late {level.late_frames}  missed {level.deadline_misses}  "
        f"dropped {level.dropped_frames}  batch {level.mean_batch_frames:4.1f}  busy {level.render_busy:.2f}  "
        f"encode {level.encode_ms_per_frame:.1f} ms  cpu {level.cpu_cores:.2f}{gpu}  "
        f"{level.host_frame_gbps:.2f} GB/s  load {level.load_1m:.1f}  {verdict}"
    )


async def start_gpu_service(device: str, folder: str) -> tuple[asyncio.subprocess.Process, str]:
    socket = os.path.join(folder, "gpu.sock")
    command = [sys.executable, "-m", "models.lipsync.server", "--socket", socket, "--device", device]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    if (await process.stdout.readline()).strip() != b"ready":
        raise RuntimeError("the GPU service did not start")
    return process, socket


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tts = await asyncio.to_thread(PiperTTS.load, None)
    speech = await presynthesise(tts)
    search = Search(args)
    shared = args.workers > 1 and (args.gpu_service or args.device.startswith("cuda"))
    search.say(
        f"channels at {FPS} fps (512x512, {args.pack}{' + ' + args.lipsync if args.lipsync else ''}), "
        f"{os.cpu_count()} cores, {args.workers} worker process(es), "
        f"{'one GPU service' if shared else 'each drawing its own'} on {args.device}; a level holds with "
        f"fps >= {MIN_FPS:g}, p99 <= {P99_LIMIT_MS:g} ms and no deadline misses"
    )
    results: dict[str, Any] = {}
    levels: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="avatarcast-bench-") as folder:
        gpu, socket = await start_gpu_service(args.device, folder) if shared else (None, None)
        try:
            for mode in args.modes:
                if args.workers == 1:
                    held, measured = await search.in_process(mode, tts)
                elif mode == "talking_unbatched":
                    continue  # batching off is a single-process comparison
                else:
                    held, measured = await search.in_workers(mode, socket)
                results[MODES[mode][2]] = held
                levels[mode] = [asdict(level) for level in measured]
        finally:
            if gpu is not None:
                gpu.terminate()
                await gpu.wait()
    return {
        **results,
        "workers": args.workers,
        "pack": args.pack,
        "lipsync": args.lipsync,
        "gpu_service": shared,
        "device": args.device,
        "criteria": {"fps_min": MIN_FPS, "p99_ms_max": P99_LIMIT_MS, "deadline_misses": 0},
        "max_channels": args.max_channels,
        "seconds_per_level": args.seconds,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "speech_seconds": round(sum(len(s.pcm) for s in speech) / AUDIO_RATE, 2),
        "levels": levels,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--workers", type=int, default=1, help="processes the channels are spread over (media workers)")
    ap.add_argument("--gpu-service", action="store_true", help="with --workers > 1: one process draws all frames")
    ap.add_argument("--max-channels", type=int, default=16)
    ap.add_argument("--start", type=int, default=2, help="the first level")
    ap.add_argument("--step", type=int, default=2, help="channels added per level until one fails")
    ap.add_argument("--seconds", type=float, default=8.0, help="steady state measured per level")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds after a level's channels start")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    ap.add_argument("--torch-threads", type=int, default=None, help="renderer threads (default: half the cores)")
    ap.add_argument("--pack", default="builtin:nova", help="the channels' avatar pack (a photo or video pack dir)")
    ap.add_argument("--lipsync", choices=["wav2lip", "wav2lip256"], default=None, help="neural lip-sync for the pack")
    ap.add_argument("--checkpoint", default=None, help="with --lipsync: the weights (random ones cost the same)")
    args = ap.parse_args()
    if args.lipsync and not args.checkpoint:
        ap.error("--lipsync needs --checkpoint (bench/render.py --lipsync measures the network without one)")
    threads = args.torch_threads or max(1, len(os.sched_getaffinity(0)) // 2)
    torch.set_num_threads(threads)  # as serve sets them (agents/worker/studio.py)
    cv2.setNumThreads(threads)
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    for mode in args.modes:
        key = MODES[mode][2]
        if key in result:
            print(f"{mode}: {result[key]} channels hold {FPS} fps")


if __name__ == "__main__":
    main()
