"""Media time: audio is the master clock, video frames are stamped from the audio position.

Audio runs at 48 kHz in 20 ms frames (960 samples), Opus's native rate and frame. A video frame
n starts at audio sample n * 48000 / fps, so the two can never drift apart: there is one
counter (samples) and everything else is derived from it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

AUDIO_RATE = 48_000
AUDIO_FRAME_SAMPLES = 960  # 20 ms
SUPPORTED_FPS = tuple(f for f in range(10, 61) if AUDIO_RATE % f == 0)
"""Frame rates whose frame length is a whole number of audio samples (25 -> 1920)."""


@dataclass(frozen=True, slots=True)
class VideoFormat:
    width: int = 512
    height: int = 512
    fps: int = 25

    def __post_init__(self) -> None:
        if self.fps not in SUPPORTED_FPS:
            raise ValueError(f"fps {self.fps} is not supported; use one of {SUPPORTED_FPS}")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"{self.width}x{self.height}: width and height must be even (yuv420p)")

    @property
    def samples_per_frame(self) -> int:
        return AUDIO_RATE // self.fps

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def frame_start(self, frame: int) -> int:
        """Audio sample at which video frame `frame` goes on screen."""
        return frame * self.samples_per_frame

    def frame_at(self, sample: int) -> int:
        """The video frame on screen at audio sample `sample`."""
        return sample // self.samples_per_frame


class Clock(Protocol):
    """Wall time for a Program. Live channels use RealClock; offline renders run as fast as they can."""

    realtime: bool

    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...


class RealClock:
    """The event loop's monotonic clock."""

    realtime = True

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


class OfflineClock:
    """A clock that jumps to whatever time is asked for: renders a clip without waiting."""

    realtime = False

    def __init__(self) -> None:
        self._t = 0.0

    def now(self) -> float:
        return self._t

    async def sleep_until(self, t: float) -> None:
        self._t = max(self._t, t)
        await asyncio.sleep(0)  # let the renderer and encoder run
