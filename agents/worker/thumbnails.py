"""Thumbnails of what a channel airs, for the studio page: a few small JPEGs a second, cheap.

FrameTap sits in front of the channel's encoder (behind the caption burner, so it sees captions
as viewers do) and keeps a reference to the last frame it passed on: no copy and no work per
frame. A JPEG is made only when someone asks, at most THUMB_FPS times a second per channel
whoever asks, from that reference (I420 -> BGR, shrunk, JPEG: ~1 ms at 512x512, off the event
loop). The frame may be a renderer's ring slot that is written again later: a thumbnail taken
just then may mix two frames, which nobody can see at this size.
"""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np

from stream.frames import is_i420
from stream.program import ProgramSink

THUMB_WIDTH = 192
"""Pixels across: a card on the studio page."""
THUMB_FPS = 4.0
"""At most this many new JPEGs per second per channel, however many pages watch."""
JPEG_QUALITY = 70


class FrameTap:
    """A ProgramSink that passes everything on and keeps the last video frame's reference."""

    def __init__(self, sink: ProgramSink) -> None:
        self.sink = sink
        self.image: np.ndarray | None = None
        self.frame = -1
        """Timeline number of `image` (-1: nothing aired yet)."""

    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        self.sink.on_audio(pcm, sample)

    def on_video(self, image: np.ndarray, frame: int) -> None:
        self.image, self.frame = image, frame
        self.sink.on_video(image, frame)

    async def ready(self) -> None:
        await self.sink.ready()


def jpeg_thumbnail(image: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """`image` (I420 or RGB) shrunk to `width` pixels across, as JPEG bytes."""
    bgr = cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420) if is_i420(image) else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    height = max(1, round(bgr.shape[0] * width / bgr.shape[1]))
    small = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG thumbnail")
    return data.tobytes()


class Thumbnails:
    """The last JPEG of each channel, made again from its tap when older than 1 / THUMB_FPS."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, int, bytes]] = {}  # channel -> (made at, frame, jpeg)

    async def get(self, name: str, tap: FrameTap) -> bytes | None:
        """The channel's current thumbnail (None before its first frame)."""
        image, frame = tap.image, tap.frame
        if image is None:
            return None
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and (cached[1] == frame or now - cached[0] < 1 / THUMB_FPS):
            return cached[2]
        jpeg = await asyncio.to_thread(jpeg_thumbnail, image)
        self._cache[name] = (now, frame, jpeg)
        return jpeg

    def forget_except(self, names: set[str]) -> None:
        """Drop the thumbnails of channels no longer on air."""
        for name in [n for n in self._cache if n not in names]:
            del self._cache[name]
