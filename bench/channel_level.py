"""One level of bench/channels.py in one process: k real channels on the product's own path, measured.

Channels are the real Channel class (drawn avatar builtin:nova at 512x512, its own encoder, no
viewers or web server) sharing one lip-sync service: this process's own (LipSyncService), or the
GPU service process's (RemoteLipSync), exactly as a media worker has them. Frame times are taken
where the Program hands each frame to the encoder. Talking channels get pre-synthesised speech
laid back to back on their Programs, so every mouth moves all the time.

    python bench/channel_level.py --channels K [--talking] [--device cpu] [--gpu-socket PATH] ...
runs one level alone and prints its Level as JSON (bench/channels.py starts one per worker).
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

import numpy as np

from agents.config import ChannelConfig, parse_config
from agents.conversation.speech import speech_segments
from agents.worker.channel import Channel
from models.lipsync.service import LipSyncService
from models.protocols import LipSync
from models.tts_piper import PiperTTS
from stream.encoder import ChannelEncoder
from stream.frames import SpeechSegment
from stream.program import Program

FPS = 25
SIZE = 512
MIN_FPS = 0.98 * FPS
P99_LIMIT_MS = 60.0
SPEECH = (
    "Welcome back to the stream, everyone. Today we are looking at three new products. "
    "The first one is a travel mug that keeps coffee hot for twelve hours. Let me know what you think in the chat!"
)


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
    render_busy: float  # share of the time the render thread was rendering (the busiest one)
    encode_ms_per_frame: float
    cpu_cores: float  # these processes
    load_1m: float  # the whole machine (other work there slows every level)
    workers: int = 1
    host_frame_gbps: float = 0.0  # I420 frames landing in host memory, GB/s
    gpu_util_pct: float | None = None  # nvidia-smi's mean over the window, where there is a GPU
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = (
            self.fps_min >= MIN_FPS
            and self.p99_ms <= P99_LIMIT_MS
            and not (self.late_frames or self.deadline_misses or self.dropped_frames or self.rejected_jobs)
        )


def channel_config(name: str, pack: str = "builtin:nova") -> ChannelConfig:
    channel = {"name": name, "avatar": {"pack": pack}, "video": {"width": SIZE, "height": SIZE, "fps": FPS}}
    return parse_config({"llm": {"backend": "none"}, "channels": [channel]}, "bench").channels[0]


async def keep_talking(program: Program, speech: list[SpeechSegment]) -> None:
    """Keep ~2 s of speech queued on the program, segment after segment, for ever."""
    for seg in itertools.cycle(speech):
        await asyncio.sleep(max(0.0, program.scheduled_until - program.position - 2.0))
        program.enqueue(SpeechSegment(seg.pcm, seg.cues, seg.cue_rate, "bench", text=seg.text, words=seg.words))


async def presynthesise(tts: PiperTTS) -> list[SpeechSegment]:
    return [s async for s in speech_segments(tts, SPEECH, "bench", FPS)]


class LevelRunner:
    """Channels on one lip-sync service, added and removed between measurements."""

    def __init__(
        self, service: LipSync, tts: PiperTTS, speech: list[SpeechSegment], talking: bool, pack: str = "builtin:nova"
    ) -> None:
        self.service = service
        self.pack = pack
        self.tts = tts
        self.speech = speech
        self.talking = talking
        self.on_air: list[OnAir] = []

    async def resize(self, n: int) -> None:
        while len(self.on_air) < n:
            cfg = channel_config(f"ch{len(self.on_air)}", self.pack)
            channel = Channel(cfg, lipsync=self.service, tts=self.tts)
            await channel.prepare()
            assert channel.program is not None
            sink = TimedSink(channel.encoder)
            channel.program.sink = sink
            await channel.start()
            feeder = asyncio.create_task(keep_talking(channel.program, self.speech)) if self.talking else None
            self.on_air.append(OnAir(channel, sink, feeder))
        while len(self.on_air) > n:
            on_air = self.on_air.pop()
            if on_air.feeder is not None:
                on_air.feeder.cancel()
                await asyncio.gather(on_air.feeder, return_exceptions=True)
            await on_air.channel.aclose()

    async def measure(self, warmup: float, seconds: float) -> Level:
        await asyncio.sleep(warmup)  # new channels start, the cost model settles
        before = self._counters()
        for a in self.on_air:
            a.sink.times.clear()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        cpu = (time.process_time() - cpu0) / elapsed
        delta = {k: v - before[k] for k, v in self._counters().items()}
        intervals = np.concatenate([np.diff(a.sink.times) for a in self.on_air]) * 1000
        frames = sum(len(a.sink.times) for a in self.on_air)
        return Level(
            channels=len(self.on_air),
            fps_min=round(min(len(a.sink.times) for a in self.on_air) / elapsed, 2),
            p99_ms=round(float(np.percentile(intervals, 99)), 1),
            max_ms=round(float(intervals.max()), 1),
            late_frames=int(delta["late"]),
            deadline_misses=int(delta["misses"]),
            dropped_frames=int(delta["dropped"]),
            rejected_jobs=int(delta["rejected"]),
            mean_batch_frames=round(delta["items"] / delta["batches"], 2) if delta["batches"] else 0.0,
            render_busy=round(delta["render_s"] / elapsed, 2),
            encode_ms_per_frame=round(1000 * delta["encode_s"] / max(1, frames), 2),
            cpu_cores=round(cpu, 2),
            load_1m=round(os.getloadavg()[0], 2),
            host_frame_gbps=round(frames * SIZE * SIZE * 3 / 2 / elapsed / 1e9, 3),
        )

    def _counters(self) -> dict[str, float]:
        m = self.service.metrics()
        return {
            "late": sum(a.program.stats["late_frames"] for a in self.on_air),
            "dropped": sum(a.channel.encoder.stats["video_dropped"] for a in self.on_air),
            "misses": m.get("deadline_misses", 0) + m.get("expired", 0),  # expired: shed unrendered, as late
            "rejected": m.get("rejected", 0),
            "items": m.get("items", 0),
            "batches": m.get("batches", 0),
            "render_s": m["tensor"]["render_seconds"],
            "encode_s": sum(a.channel.encoder.encode_seconds for a in self.on_air),
        }

    async def aclose(self) -> None:
        await self.resize(0)


async def run_alone(args: argparse.Namespace) -> Level:
    """This process's level: its own service, or the GPU service's (as a media worker has it)."""
    from agents.worker.studio import local_lipsync

    lipsync = {"device": args.device}
    if args.lipsync:
        lipsync |= {"model": args.lipsync, "checkpoint": args.checkpoint}
    cfg = parse_config({"lipsync": lipsync, "llm": {"backend": "none"}, "channels": [{"name": "x"}]})
    service: LipSync = local_lipsync(cfg)
    if args.gpu_socket:
        from models.lipsync.remote import RemoteLipSync

        service = await RemoteLipSync.connect(args.gpu_socket, fallback=lambda: LipSyncService("cpu"))
    tts = await asyncio.to_thread(PiperTTS.load, None)
    runner = LevelRunner(service, tts, await presynthesise(tts), args.talking, args.pack)
    try:
        await runner.resize(args.channels)
        return await runner.measure(args.warmup, args.seconds)
    finally:
        await runner.aclose()
        await service.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description="one bench/channels.py level in this process; prints its JSON")
    ap.add_argument("--channels", type=int, required=True)
    ap.add_argument("--talking", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gpu-socket", default=None)
    ap.add_argument("--pack", default="builtin:nova", help="the channels' avatar pack")
    ap.add_argument("--lipsync", default=None, help="a neural model (wav2lip, wav2lip256) for photo and video packs")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    level = asyncio.run(run_alone(args))
    json.dump({k: v for k, v in vars(level).items() if k != "ok"}, sys.stdout)


def level_from(data: dict[str, Any]) -> Level:
    return Level(**{k: v for k, v in data.items() if k != "ok"})


if __name__ == "__main__":
    main()
