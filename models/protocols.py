"""The shapes of the shared model services, so agents/ depends on these and not on vendors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.lipsync.visemes import PhonemeTiming


class TTSError(RuntimeError):
    """Synthesis failed; `recoverable` says whether trying again (or a filler line) makes sense."""

    def __init__(self, message: str, *, recoverable: bool = True) -> None:
        super().__init__(message)
        self.recoverable = recoverable


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """One sentence of synthesised speech with the timing of every phoneme in it."""

    audio: np.ndarray  # int16 mono
    sample_rate: int
    phonemes: list[PhonemeTiming]

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


class TTS(Protocol):
    def synthesize(self, text: str) -> AsyncIterator[SpeechChunk]:
        """Speech for `text`, one chunk per sentence as soon as each is ready.

        Closing the iterator early stops the synthesis after the sentence in progress.
        """
        ...
