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
from stream.frames import EventKind, ProgramEvent, frame_size, is_i420
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
    """`image` (I420 or RGB) with `text` on a dark band at the bottom, shrunk to fit the width."""
    width, height = frame_size(image)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    if tw > width * 0.94:
        scale *= width * 0.94 / tw
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    pad = max(4, th // 2)
    top = max(0, height - th - base - 3 * pad) & ~1  # even: the band starts on a chroma row
    origin = ((width - tw) // 2, height - base - 2 * pad - top)
    mask = np.zeros((height - top, width), np.uint8)  # the text, anti-aliased, over the band
    cv2.putText(mask, text, origin, font, scale, 255, thickness, cv2.LINE_AA)
    if is_i420(image):
        return _caption_i420(image, top, mask)
    out = image.copy()
    band = out[top:]
    alpha = mask[..., None].astype(np.float32) / 255
    band[:] = (band * np.float32(0.4) * (1 - alpha) + 255 * alpha + 0.5).astype(np.uint8)
    return out


def _caption_i420(image: np.ndarray, top: int, mask: np.ndarray) -> np.ndarray:
    """The band darkened to 40 % and the text in white, drawn on the planes themselves: luma at full
    resolution, chroma pulled to neutral under the text at half."""
    out = image.copy()
    width, height = frame_size(image)
    flat = out.reshape(-1)
    luma = out[:height]
    chroma_w, chroma_h = width // 2, height // 2
    u = flat[height * width : height * width + chroma_w * chroma_h].reshape(chroma_h, chroma_w)
    v = flat[height * width + chroma_w * chroma_h :].reshape(chroma_h, chroma_w)
    alpha = mask.astype(np.float32) / 255
    band = luma[top:].astype(np.float32)
    luma[top:] = (((band - 16) * 0.4 + 16) * (1 - alpha) + 235 * alpha + 0.5).astype(np.uint8)
    small = cv2.resize(alpha, (chroma_w, chroma_h - top // 2), interpolation=cv2.INTER_AREA)
    for plane in (u, v):
        c = plane[top // 2 :].astype(np.float32)
        plane[top // 2 :] = (((c - 128) * 0.4 + 128) * (1 - small) + 128 * small + 0.5).astype(np.uint8)
    return out
