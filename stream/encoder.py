"""The channel's one encoder: H.264 video, Opus audio (WebRTC) and AAC audio (MP4, RTMP).

Every output of a channel gets the same packets (stream/fanout.py); nothing is encoded per
viewer. Encoding runs in one worker thread: it keeps x264 off the event loop and keeps packets
in order. The H.264 stream is what aiortc's packetiser and browsers need (notes/fanout.md):
Annex-B start codes, SPS/PPS in front of every IDR, one access unit per frame (zerolatency),
Constrained Baseline, periodic IDRs (they bound recovery from loss) and forced IDRs for joins
and picture-loss requests, rate-limited so a PLI storm cannot flood the other viewers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import Counter
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np

from stream.clock import AUDIO_RATE, VideoFormat
from stream.fanout import PacketFanout
from stream.frames import to_i420

log = logging.getLogger(__name__)

MAX_PENDING_VIDEO = 8
"""Frames waiting for the encoder beyond this are dropped (counted), never queued without bound."""


def _h264_context(fmt: VideoFormat, bitrate: int, keyint_s: float) -> av.VideoCodecContext:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = fmt.width, fmt.height, "yuv420p"
    ctx.framerate, ctx.time_base = Fraction(fmt.fps), Fraction(1, fmt.fps)
    ctx.bit_rate = bitrate
    ctx.profile = "Baseline"  # x264 marks it Constrained Baseline: profile-level-id 42e01f
    keyint = max(1, round(fmt.fps * keyint_s))
    kbps = bitrate // 1000
    ctx.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "threads": "1",  # channels are the parallelism: N encoders x auto threads only contend
        "level": "31",
        "forced-idr": "1",
        "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:repeat-headers=1:annexb=1"
        f":vbv-maxrate={kbps}:vbv-bufsize={max(1, kbps // 2)}",
    }
    return ctx


def _audio_context(codec: str) -> av.AudioCodecContext:
    ctx = av.CodecContext.create(codec, "w")
    ctx.sample_rate, ctx.layout = AUDIO_RATE, "stereo"
    ctx.format = "s16" if codec == "libopus" else "fltp"
    ctx.bit_rate = 64_000 if codec == "libopus" else 128_000
    ctx.time_base = Fraction(1, AUDIO_RATE)
    if codec == "libopus":
        ctx.options = {"application": "audio"}
    return ctx


def video_frame(image: np.ndarray) -> av.VideoFrame:
    """An I420 frame (as renderers make it) or an RGB one -> a yuv420p frame for x264. I420 planes go
    in as they are (one copy into the AVFrame); RGB is converted by OpenCV's SIMD BT.601 conversion
    (~0.1 ms at 512x512, where PyAV's swscale path costs ~0.4 ms of the same core)."""
    return av.VideoFrame.from_ndarray(to_i420(image), format="yuv420p")


def parameter_sets(annexb: bytes) -> bytes | None:
    """The SPS and PPS NAL units (with start codes) at the front of an Annex-B IDR access unit."""
    out = b""
    for nal in annexb.split(b"\x00\x00\x01"):
        nal = nal.rstrip(b"\x00")
        if nal and nal[0] & 0x1F in (7, 8):
            out += b"\x00\x00\x00\x01" + nal
    return out or None


class ChannelEncoder:
    """Encodes a channel's program once and publishes the packets to fan-outs.

    It is the Program's sink: `on_video` / `on_audio` are called on the event loop, the encoding
    happens in the worker thread, and packets are published back on the loop in order.
    """

    def __init__(
        self,
        fmt: VideoFormat,
        *,
        bitrate: int = 1_000_000,
        keyint_s: float = 2.0,
        min_idr_gap_s: float = 0.2,
        name: str = "",
    ) -> None:
        self.fmt = fmt
        self.name = name
        self.min_idr_gap_s = min_idr_gap_s
        self.video = PacketFanout("video", request_keyframe=self.request_keyframe, min_idr_gap_s=min_idr_gap_s)
        self.opus = PacketFanout("audio")
        self.aac = PacketFanout("audio")
        self.stats: Counter[str] = Counter()
        self.keyframe_requests: Counter[str] = Counter()
        self._h264 = _h264_context(fmt, bitrate, keyint_s)
        self._opus = _audio_context("libopus")
        self._aac: av.AudioCodecContext | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"encode-{name}")
        self._pending_video = 0
        self._keyframe_pending: str | None = None
        self._last_idr = float("-inf")  # when the last IDR was asked for or came out
        self._last_job: asyncio.Future | None = None
        self._closed = False
        self.encode_seconds = 0.0
        self.h264_extradata: bytes | None = None
        """SPS+PPS (Annex-B) of the stream once the first IDR is out; MP4/FLV headers need them."""

    def enable_aac(self) -> None:
        """Start encoding AAC too (MP4 and RTMP sinks need it; WebRTC alone does not)."""
        if self._aac is None:
            self._aac = _audio_context("aac")

    def request_keyframe(self, reason: str) -> None:
        """Ask for an IDR at the next frame (a viewer joined, lost packets, or lags)."""
        self.keyframe_requests[reason] += 1
        if self._keyframe_pending is None:
            self._keyframe_pending = reason

    # ------------------------------------------------------------------ ProgramSink
    async def ready(self) -> None:
        """Return once another video frame would not be dropped (offline renders wait here)."""
        while self._pending_video >= MAX_PENDING_VIDEO and self._last_job is not None:
            await asyncio.gather(self._last_job, return_exceptions=True)
            await asyncio.sleep(0)

    def on_video(self, image: np.ndarray, frame: int) -> None:
        if self._closed:
            return
        if self._pending_video >= MAX_PENDING_VIDEO:
            self.stats["video_dropped"] += 1
            return
        force = False
        now = time.monotonic()
        if self._last_idr == float("-inf"):
            self._last_idr = now  # x264 opens every stream with an IDR
        if self._keyframe_pending is not None and now - self._last_idr >= self.min_idr_gap_s:
            force, self._keyframe_pending, self._last_idr = True, None, now
        self._pending_video += 1
        self._submit(self._encode_video, image, frame, force)

    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        if not self._closed:
            self._submit(self._encode_audio, pcm, sample)

    # ------------------------------------------------------------------ worker side
    def _submit(self, fn: Callable[..., dict[str, list[av.Packet]]], *args: object) -> None:
        fut = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        fut.add_done_callback(self._publish)
        self._last_job = fut

    def _encode_video(self, image: np.ndarray, frame: int, force_idr: bool) -> dict[str, list[av.Packet]]:
        t0 = time.perf_counter()
        vf = video_frame(image)
        vf.pts, vf.time_base = frame, self._h264.time_base
        vf.pict_type = av.video.frame.PictureType.I if force_idr else av.video.frame.PictureType.NONE
        packets = self._h264.encode(vf)
        self.encode_seconds += time.perf_counter() - t0
        return {"video": packets}

    def _encode_audio(self, pcm: np.ndarray, sample: int) -> dict[str, list[av.Packet]]:
        stereo = np.repeat(pcm, 2).reshape(1, -1)
        out: dict[str, list[av.Packet]] = {}
        for name, ctx in (("opus", self._opus), ("aac", self._aac)):
            if ctx is not None:
                af = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
                af.sample_rate, af.pts, af.time_base = AUDIO_RATE, sample, Fraction(1, AUDIO_RATE)
                out[name] = ctx.encode(af)
        return out

    def _publish(self, fut: asyncio.Future) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self.stats["encode_errors"] += 1
            log.error("encoder %s: %s", self.name, exc, exc_info=exc)
            return
        result = fut.result()
        if "video" in result:
            self._pending_video -= 1
        for kind, packets in result.items():
            for packet in packets:
                if kind == "video":
                    self._publish_video(packet)
                else:
                    (self.opus if kind == "opus" else self.aac).publish(packet, True)
                    self.stats[f"{kind}_packets"] += 1

    def _publish_video(self, packet: av.Packet) -> None:
        key = packet.is_keyframe
        if key:  # any IDR (periodic too) answers every request made so far
            self.stats["idr"] += 1
            self._keyframe_pending = None
            self._last_idr = time.monotonic()
            if self.h264_extradata is None:
                self.h264_extradata = parameter_sets(bytes(packet))
        self.stats["video_packets"] += 1
        self.video.publish(packet, key)

    def _flush_codecs(self) -> dict[str, list[av.Packet]]:
        out = {"video": self._h264.encode(None), "opus": self._opus.encode(None)}
        if self._aac is not None:
            out["aac"] = self._aac.encode(None)
        return out

    async def finish(self) -> None:
        """End of a clip: flush the codecs' last packets out. The encoder takes no more frames."""
        self._pending_video += 1  # the flush result counts as one video job
        self._submit(self._flush_codecs)
        self._closed = True
        await self.drain()

    async def drain(self) -> None:
        """Wait until everything submitted so far is encoded and published."""
        if self._last_job is not None:
            await asyncio.gather(self._last_job, return_exceptions=True)
            await asyncio.sleep(0)  # let the done-callbacks run

    async def aclose(self) -> None:
        self._closed = True
        await self.drain()
        self._pool.shutdown(wait=True)


def encode_cost_s(fmt: VideoFormat, image: np.ndarray, *, bitrate: int = 1_000_000, frames: int = 12) -> float:
    """Measured seconds x264 takes per frame of `image`-like content at `fmt` (blocking: a few ms).

    Admission control uses it to price a channel's encoder before the channel goes on air.
    """
    ctx = _h264_context(fmt, bitrate, 2.0)
    rng = np.random.default_rng(0)
    image = to_i420(image)
    noisy = [  # a little noise per frame, so x264 cannot skip it as a static picture
        np.clip(image.astype(np.int16) + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8) for _ in range(4)
    ]
    times = []
    for i in range(frames):
        t0 = time.perf_counter()
        vf = video_frame(noisy[i % len(noisy)])
        vf.pts = i
        ctx.encode(vf)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:]))  # past the first frames (the IDR, x264's lookahead)
