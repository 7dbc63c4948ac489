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


# ---------------------------------------------------------------------- LLM
class LLMError(RuntimeError):
    """A generation failed. `recoverable`: another request may succeed (a busy or restarting
    server, a refused connection, a bad request); not recoverable: nothing will until someone
    acts (a dead engine process, a wrong API key or model name)."""

    def __init__(self, message: str, *, recoverable: bool = True) -> None:
        super().__init__(message)
        self.recoverable = recoverable


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 96
    temperature: float = 0.3
    top_p: float = 0.9
    stop: tuple[str, ...] = ()


class LLM(Protocol):
    """One engine shared by every channel (continuous batching across channels)."""

    def generate(
        self, messages: list[dict[str, str]], params: GenerationParams, request_id: str, priority: int = 0
    ) -> AsyncIterator[str]:
        """Text deltas of the assistant's reply to the chat `messages` ({"role", "content"}).

        `request_id` is unique per request (never reused, not even on retry). Cancelling the
        consuming task or calling aclose() on the iterator aborts the request in the engine.
        Raises LLMError.
        """
        ...


# ---------------------------------------------------------------------- ASR
@dataclass(frozen=True, slots=True)
class ASREvent:
    """What a listening session reports, in order, for one viewer's microphone.

    kind: "speech_start" (voice detected, `at` = its start), "partial" (text so far, while the
    viewer still speaks), "likely_final" (the text if the silence that began at `at` turns out to
    be the end: an answer may be prepared, not aired), "resumed" (it did not: the viewer went on
    talking; the likely final is void), "final" (the utterance's text, after the end of speech),
    "speech_end". `at` is seconds on the session's own audio clock (samples pushed so far / rate).
    """

    kind: str
    at: float
    text: str = ""
