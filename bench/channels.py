"""How many channels one box holds at 25 fps: idle, and all talking, with cross-channel batching on and off.

    python bench/channels.py [--json] [--max-channels 16] [--seconds 8] [--warmup 3] [--device auto]

A level holds when every channel's frames reach its encoder at >= 98 % of 25 fps, the p99 interval
between consecutive frames of a channel is <= 60 ms, and no frame missed its deadline (no frame
repeated late by the Program, no lip-sync job done after its frame aired, no frame dropped at the
encoder). Channels are the real Channel class (drawn avatar builtin:nova at 512x512, its own
encoder, no viewers or web server) sharing one lip-sync service; frame times are taken where the
Program hands each frame to the encoder. Talking channels get pre-synthesised speech laid back to
back on their Programs, so every mouth moves all the time. The search adds channels `--step` at a
time while levels hold, then bisects between the last level that held and the first that did not.
The JSON's talking_channels, idle_channels and talking_channels_unbatched are those largest levels.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from agents.config import ChannelConfig, parse_config
from agents.conversation.speech import speech_segments
from agents.worker.channel import Channel
from models.lipsync.service import LipSyncService
from models.tts_piper import PiperTTS
from stream.clock import AUDIO_RATE
from stream.encoder import ChannelEncoder
from stream.frames import SpeechSegment
from stream.program import Program

FPS = 25
MIN_FPS = 0.98 * FPS
P99_LIMIT_MS = 60.0
SPEECH = (
    "Welcome back to the stream, everyone. Today we are looking at three new products. "
    "The first one is a travel mug that keeps coffee hot for twelve hours. Let me know what you think in the chat!"
)
MODES = {
    "idle": (False, True, "idle_channels"),
    "talking": (True, True, "talking_channels"),
    "talking_unbatched": (True, False, "talking_channels_unbatched"),
}
"""mode -> (talking, batching, the JSON key of its result)."""


class TimedSink:
    """The channel's encoder as the Program's sink, noting when every frame reached it."""

    def __init__(self, encoder: ChannelEncoder) -> None:
        self.encoder = encoder
        self.times: list[float] = []

    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        self.encoder.on_audio(pcm, sample)

    def on_video(self, image: np.ndarray, frame: int) -> None:
        self.times.append(time.perf_counter())
        self.encoder.on_video(image, frame)

    async def ready(self) -> None:
        await self.encoder.ready()


@dataclass
class OnAir:
    channel: Channel
    sink: TimedSink
    feeder: asyncio.Task[None] | None

    @property
    def program(self) -> Program:
        assert self.channel.program is not None
        return self.channel.program


@dataclass
class Level:
    channels: int
    fps_min: float
    p99_ms: float
    max_ms: float
    late_frames: int
    deadline_misses: int
    dropped_frames: int
    rejected_jobs: int
    mean_batch_frames: float
    render_busy: float  # share of the time the render thread was rendering
    encode_ms_per_frame: float
    cpu_cores: float  # this process
    load_1m: float  # the whole machine (other work there slows every level)
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = (
            self.fps_min >= MIN_FPS
            and self.p99_ms <= P99_LIMIT_MS
            and not (self.late_frames or self.deadline_misses or self.dropped_frames or self.rejected_jobs)
        )


def channel_config(name: str) -> ChannelConfig:
    channel = {"name": name, "avatar": {"pack": "builtin:nova"}, "video": {"width": 512, "height": 512, "fps": FPS}}
    return parse_config({"llm": {"backend": "none"}, "channels": [channel]}, "bench").channels[0]


async def keep_talking(program: Program, speech: list[SpeechSegment]) -> None:
    """Keep ~2 s of speech queued on the program, segment after segment, for ever."""
    for seg in itertools.cycle(speech):
        await asyncio.sleep(max(0.0, program.scheduled_until - program.position - 2.0))
        program.enqueue(SpeechSegment(seg.pcm, seg.cues, seg.cue_rate, "bench", text=seg.text, words=seg.words))


class Bench:
    def __init__(self, args: argparse.Namespace, tts: PiperTTS, speech: list[SpeechSegment]) -> None:
        self.args = args
        self.tts = tts
        self.speech = speech
        out = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON alone
        self.say = lambda line: print(line, file=out, flush=True)

    async def add(self, service: LipSyncService, name: str, talking: bool) -> OnAir:
        channel = Channel(channel_config(name), lipsync=service, tts=self.tts)
        await channel.prepare()
        assert channel.program is not None
        sink = TimedSink(channel.encoder)
        channel.program.sink = sink
        await channel.start()
        feeder = asyncio.create_task(keep_talking(channel.program, self.speech)) if talking else None
        return OnAir(channel, sink, feeder)

    @staticmethod
    async def remove(on_air: OnAir) -> None:
        if on_air.feeder is not None:
            on_air.feeder.cancel()
            await asyncio.gather(on_air.feeder, return_exceptions=True)
        await on_air.channel.aclose()

    async def measure(self, service: LipSyncService, on_air: list[OnAir]) -> Level:
        await asyncio.sleep(self.args.warmup)  # new channels start, the cost model settles
        before = self._counters(service, on_air)
        for a in on_air:
            a.sink.times.clear()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(self.args.seconds)
        elapsed = time.perf_counter() - t0
        cpu = (time.process_time() - cpu0) / elapsed
        after = self._counters(service, on_air)
        delta = {k: after[k] - before[k] for k in after}
        intervals = np.concatenate([np.diff(a.sink.times) for a in on_air]) * 1000
        return Level(
            channels=len(on_air),
            fps_min=round(min(len(a.sink.times) for a in on_air) / elapsed, 2),
            p99_ms=round(float(np.percentile(intervals, 99)), 1),
            max_ms=round(float(intervals.max()), 1),
            late_frames=int(delta["late"]),
            deadline_misses=int(delta["misses"]),
            dropped_frames=int(delta["dropped"]),
            rejected_jobs=int(delta["rejected"]),
            mean_batch_frames=round(delta["items"] / delta["batches"], 2) if delta["batches"] else 0.0,
            render_busy=round(delta["render_s"] / elapsed, 2),
            encode_ms_per_frame=round(1000 * delta["encode_s"] / max(1, sum(len(a.sink.times) for a in on_air)), 2),
            cpu_cores=round(cpu, 2),
            load_1m=round(os.getloadavg()[0], 2),
        )

    @staticmethod
    def _counters(service: LipSyncService, on_air: list[OnAir]) -> dict[str, float]:
        m = service.metrics()
        return {
            "late": sum(a.program.stats["late_frames"] for a in on_air),
            "dropped": sum(a.channel.encoder.stats["video_dropped"] for a in on_air),
            "misses": m["deadline_misses"] + m["expired"],  # expired: shed unrendered, as late
            "rejected": m["rejected"],
            "items": m["items"],
            "batches": m["batches"],
            "render_s": m["tensor"]["render_seconds"],
            "encode_s": sum(a.channel.encoder.encode_seconds for a in on_air),
        }

    async def search(self, mode: str) -> tuple[int, list[Level]]:
        """The largest channel count that holds in `mode` (0 if even the first level fails)."""
        talking, batching, _ = MODES[mode]
        service = LipSyncService(self.args.device, batching=batching)
        on_air: list[OnAir] = []
        levels: list[Level] = []
        held, failed = 0, None
        n = min(self.args.start, self.args.max_channels)
        try:
            while True:
                while len(on_air) < n:
                    on_air.append(await self.add(service, f"ch{len(on_air)}", talking))
                while len(on_air) > n:
                    await self.remove(on_air.pop())
                level = await self.measure(service, on_air)
                levels.append(level)
                self.say(f"  {mode:18s} {self._row(level)}")
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
        finally:
            await asyncio.gather(*(self.remove(a) for a in on_air))
            await service.aclose()
        return held, levels

    @staticmethod
    def _row(level: Level) -> str:
        verdict = "holds" if level.ok else "FAILS"
        return (
            f"{level.channels:3d} channels: fps min {level.fps_min:5.2f}  p99 {level.p99_ms:5.1f} ms  "
            f"max {level.max_ms:6.1f} ms  late {level.late_frames}  missed {level.deadline_misses}  "
            f"dropped {level.dropped_frames}  batch {level.mean_batch_frames:4.1f}  busy {level.render_busy:.2f}  "
            f"encode {level.encode_ms_per_frame:.1f} ms  cpu {level.cpu_cores:.2f}  load {level.load_1m:.1f}  {verdict}"
        )


async def presynthesise(tts: PiperTTS) -> list[SpeechSegment]:
    return [s async for s in speech_segments(tts, SPEECH, "bench", FPS)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tts = await asyncio.to_thread(PiperTTS.load, None)
    speech = await presynthesise(tts)
    bench = Bench(args, tts, speech)
    bench.say(
        f"channels at {FPS} fps (512x512 drawn avatar), {os.cpu_count()} cores, torch {torch.get_num_threads()} "
        f"threads; a level holds with fps >= {MIN_FPS:g}, p99 <= {P99_LIMIT_MS:g} ms and no deadline misses"
    )
    results: dict[str, Any] = {}
    levels: dict[str, list[dict[str, Any]]] = {}
    for mode in args.modes:
        held, measured = await bench.search(mode)
        results[MODES[mode][2]] = held
        levels[mode] = [vars(level) for level in measured]
    return {
        **results,
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
    ap.add_argument("--max-channels", type=int, default=16)
    ap.add_argument("--start", type=int, default=2, help="the first level")
    ap.add_argument("--step", type=int, default=2, help="channels added per level until one fails")
    ap.add_argument("--seconds", type=float, default=8.0, help="steady state measured per level")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds after a level's channels start")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    ap.add_argument("--torch-threads", type=int, default=None, help="renderer threads (default: half the cores)")
    args = ap.parse_args()
    threads = args.torch_threads or max(1, len(os.sched_getaffinity(0)) // 2)
    torch.set_num_threads(threads)  # as serve sets them (agents/worker/studio.py)
    cv2.setNumThreads(threads)
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    for mode in args.modes:
        print(f"{mode}: {result[MODES[mode][2]]} channels hold {FPS} fps")


if __name__ == "__main__":
    main()
