"""The shapes of the shared model services, so agents/ depends on these and not on vendors."""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
    """How one reply is sampled. `choice` and `json_schema` constrain it (vLLM's structured outputs):
    a small model asked "which of these lines answers it?" can then only name a line, never ramble.
    At most one of the two may be set."""

    max_tokens: int = 96
    temperature: float = 0.3
    top_p: float = 0.9
    stop: tuple[str, ...] = ()
    choice: tuple[str, ...] | None = None
    """The reply is exactly one of these strings."""
    json_schema: Mapping[str, Any] | None = None
    """The reply is one JSON document valid under this JSON schema."""

    def __post_init__(self) -> None:
        if self.choice is not None and self.json_schema is not None:
            raise ValueError("GenerationParams: set choice or json_schema, not both")
        if self.choice is not None and not self.choice:
            raise ValueError("GenerationParams: choice needs at least one option")


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


class ASR(Protocol):
    """One speech recogniser shared by every listening session of the process (models/listen.py
    runs the VAD and decides when to ask it)."""

    multilingual: bool

    def transcribe(
        self, audio: np.ndarray, *, beam_size: int = 1, urgent: bool = True
    ) -> concurrent.futures.Future[str]:
        """Text of `audio` (float32 mono 16 kHz), decoded off the caller's thread; `urgent=False`
        (partials) lets urgent jobs (finals) go first."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------- lip-sync
class PreparedFace(Protocol):
    """One avatar pack made ready for one frame size (by whichever process renders it)."""

    kind: str
    """The pack kind: "sprite", "photo" (or a neural model's)."""
    size: tuple[int, int]
    """(width, height) of the frames it renders."""
    mouth_box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) of the mouth region in rendered frames, for tests and A/V measurement."""
    still: np.ndarray
    """The neutral frame as I420 (uint8 (height * 3 // 2, width)), shown when rendering fails or runs late."""


class FrameLease(Protocol):
    """Host memory frames are rendered into (models/frame_ring.py FrameRing)."""

    frame_shape: tuple[int, ...]

    def lease(self, n: int) -> list[np.ndarray] | None: ...


class LipSync(Protocol):
    """Frames for every channel, batched across channels by deadline: in this process
    (models/lipsync/service.py) or in the GPU service process (models/lipsync/remote.py)."""

    device: Any
    """Where the frames are drawn (a torch.device)."""

    async def prepare(self, pack_dir: Path, size: tuple[int, int], background: tuple[int, int, int] | None) -> Any:
        """A PreparedFace for `pack_dir` at `size`, over a flat `background` colour if given (drawn
        packs). Raises models.avatars.PackError for a bad pack."""
        ...

    def frame_ring(self, face: Any, slots: int, name: str) -> FrameLease:
        """Host memory for `slots` of `face`'s frames, of the kind this service renders into."""
        ...

    async def render(
        self,
        face: Any,
        params: np.ndarray,
        into: Sequence[np.ndarray],
        *,
        deadline: float | None = None,
        key: str = "",
        expires: float | None = None,
        frames: np.ndarray | None = None,
        audio: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Draw `face` posed by params[i] (float32 (n, N_PARAMS)) into into[i] (I420 frames leased from
        `frame_ring`). `deadline`: the monotonic time the first frame goes on air; `key`: the channel;
        `expires`: when the last one does. An audio-driven face (`audio_window` > 0) also takes each
        frame's timeline number and its int16 16 kHz audio window, which lies in the frame's ring slot.
        Raises models.batcher.Overloaded (queue full; Expired: too
        late) and whatever the renderer raised."""
        ...

    def forget(self, key: str) -> None:
        """A channel left: drop its counters."""
        ...

    def metrics(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...
