"""Word-timed captions: what the viewers are hearing right now, word by word.

The Program reports each word when its sound goes out (ProgramEvent WORD, stamped with its time
on the channel's timeline), so a caption never runs ahead of the voice and a cut answer's unsaid
words never appear. `CaptionLine` turns those events into the line to show; the burn-in sink
draws that line into every video frame, and the overlay page shows the same words over SSE.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from stream.clock import AUDIO_RATE, VideoFormat
from stream.frames import EventKind, ProgramEvent
from stream.program import ProgramSink

MAX_WORDS = 7
"""Words on the line at once: the newest ones; older words scroll off to the left."""
HOLD_S = 1.5
"""The last words stay this long after the voice stops, then the line clears."""


@dataclass(slots=True)
class _Word:
    at: float
    text: str


class CaptionLine:
    """The caption line as a function of timeline time, fed with the Program's events."""

    def __init__(self, max_words: int = MAX_WORDS, hold_s: float = HOLD_S) -> None:
        self.max_words = max_words
        self.hold_s = hold_s
        self._words: deque[_Word] = deque()
        self._ended_at: float | None = None  # when the last segment stopped sounding

    def on_event(self, event: ProgramEvent) -> None:
        if event.kind is EventKind.WORD:
            self._words.append(_Word(event.at, event.text))
            self._ended_at = None
        elif event.kind is EventKind.SEGMENT_STARTED:
            self._ended_at = None
        elif event.kind is EventKind.SEGMENT_FINISHED:
            self._ended_at = event.at if not event.interrupted else event.at - self.hold_s  # a cut clears at once

    def text(self, at: float) -> str:
        """The line to show at timeline second `at`: the newest words already heard."""
        if self._ended_at is not None and at >= self._ended_at + self.hold_s:
            self._words.clear()
            self._ended_at = None
        heard = [w.text for w in self._words if w.at <= at]
        while len(self._words) > 4 * self.max_words:  # bounded: a long answer does not grow it
            self._words.popleft()
        return " ".join(heard[-self.max_words :])


class CaptionBurner:
    """A ProgramSink in front of the encoder that draws the caption line into every frame.

    Every output (WebRTC, RTMP, OBS, the recording) then shows the captions, since they all take
    the one encoder's packets. Frames are copied before drawing: the Program may show the same
    rendered frame twice (a late frame), and the renderer's arrays are not ours to change.
    """

    def __init__(self, sink: ProgramSink, fmt: VideoFormat, line: CaptionLine | None = None) -> None:
        self.sink = sink
        self.fmt = fmt
        self.line = line or CaptionLine()
        self._scale = fmt.height / 720 * 1.2
        self._thickness = max(1, round(fmt.height / 360))

    def on_event(self, event: ProgramEvent) -> None:
        self.line.on_event(event)

    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        self.sink.on_audio(pcm, sample)

    def on_video(self, image: np.ndarray, frame: int) -> None:
        text = self.line.text(self.fmt.frame_start(frame) / AUDIO_RATE)
        self.sink.on_video(draw_caption(image, text, self._scale, self._thickness) if text else image, frame)

    async def ready(self) -> None:
        await self.sink.ready()


def draw_caption(image: np.ndarray, text: str, scale: float, thickness: int) -> np.ndarray:
    """`image` with `text` on a dark band at the bottom, shrunk to fit the width."""
    out = image.copy()
    h, w = out.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    if tw > w * 0.94:
        scale *= w * 0.94 / tw
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    pad = max(4, th // 2)
    top = h - th - base - 3 * pad
    band = out[top:h]
    band[:] = (band.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken: readable on any face
    origin = ((w - tw) // 2, h - base - 2 * pad)
    cv2.putText(out, text, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out
