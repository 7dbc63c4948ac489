"""The few typed things that travel through a channel's Program.

Deliberately small (pipecat's 129 frame classes are the counter-example): speech segments in,
timeline events out. A new behaviour gets a field, not a new class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import cv2
import numpy as np


@dataclass(slots=True, eq=False)
class SpeechSegment:
    """One piece of speech to put on the timeline: audio plus what the face does meanwhile.

    `cues` is a float32 array (frames, k) sampled at `cue_rate` from the segment's first sample,
    entry i describing time (i + 0.5) / cue_rate; the Program hands each video frame the cue row
    for its own time and does not interpret it (for avatars: jaw, width, round).
    """

    pcm: np.ndarray  # int16 mono at 48 kHz
    cues: np.ndarray
    cue_rate: float
    turn_id: str
    text: str = ""
    words: tuple[tuple[float, str], ...] = ()
    """(second from the segment's start, word) for word-timed captions, in order."""
    segment_id: int = field(default=0)

    def __post_init__(self) -> None:
        if self.pcm.dtype != np.int16 or self.pcm.ndim != 1:
            raise ValueError("SpeechSegment.pcm must be 1-D int16 (mono, 48 kHz)")
        if self.cues.ndim != 2:
            raise ValueError("SpeechSegment.cues must be 2-D (frames, k)")


class EventKind(Enum):
    SEGMENT_STARTED = "segment_started"
    SEGMENT_FINISHED = "segment_finished"
    WORD = "word"  # a word of a segment began to be heard (text: the word)


@dataclass(frozen=True, slots=True)
class ProgramEvent:
    """What actually went on air, reported when it happened (sinks tell the truth, not the plan)."""

    kind: EventKind
    turn_id: str
    segment_id: int
    text: str
    at: float  # seconds on the channel's timeline (audio position)
    played: float = 0.0  # seconds of the segment that went out (SEGMENT_FINISHED)
    duration: float = 0.0  # seconds the segment was meant to last
    interrupted: bool = False  # cut short by Program.cut


# ---------------------------------------------------------------------- video frames
# A video frame on its way to the encoder is a uint8 numpy array in one of two layouts:
#   I420 (yuv420p), shape (height * 3 // 2, width): the Y plane, then U, then V (each a quarter),
#        packed; what renderers make and x264 takes as it is (BT.601, limited range);
#   RGB, shape (height, width, 3): pictures made on the CPU for tests and tools; converted once.


def is_i420(image: np.ndarray) -> bool:
    return image.ndim == 2


def frame_size(image: np.ndarray) -> tuple[int, int]:
    """(width, height) in pixels of an I420 or RGB frame."""
    return (image.shape[1], image.shape[0] * 2 // 3) if is_i420(image) else (image.shape[1], image.shape[0])


def to_i420(image: np.ndarray) -> np.ndarray:
    """An RGB frame as I420 (OpenCV's SIMD BT.601 conversion, ~0.1 ms at 512x512); I420 as it is."""
    return image if is_i420(image) else cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An I420 frame as RGB (for pictures people look at: tests, thumbnails); RGB as it is."""
    return cv2.cvtColor(image, cv2.COLOR_YUV2RGB_I420) if is_i420(image) else image
