"""The studio's one TTS service: every channel's sentences, synthesised by one worker, by deadline, fairly.

Piper has no batching across sentences, so what sharing buys is order rather than throughput: the
sentence whose channel runs out of queued speech first is synthesised first; channels whose speech
is equally urgent take turns; a channel cannot queue more than its share (a full queue refuses the
sentence at once with a recoverable TTSError, and the channel says its filler line). Without it every
channel's Piper calls compete for the same cores at once and all channels are late together.
Voices load once per (model, speaker, length scale) and are shared; each channel speaks through
its own ChannelVoice handle, which is a TTS (models/protocols.py) yielding exactly Piper's chunks.
The real-time factor (synthesis seconds / audio seconds) is measured per sentence, for /metrics.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from models.batcher import DeadlineBatcher, Overloaded
from models.protocols import SpeechChunk, TTSError
from models.tts_piper import Emit, PiperTTS, relay_chunks

VoiceKey = tuple[str, str, int | None, float | None, str | None]
"""(backend, model, speaker, length scale, language): one loaded voice each."""


class Voice(Protocol):
    """A loaded voice the worker drives: PiperTTS, or CoquiTTS on GPU hosts."""

    @property
    def sample_rate(self) -> int: ...

    def synthesize_blocking(self, text: str, emit: Emit, stop: threading.Event) -> None:
        """Chunks of `text` through `emit`, one per sentence; give up once `stop` is set."""
        ...

    def synthesize(self, text: str) -> AsyncIterator[SpeechChunk]:
        """The same on the loop, on the voice's own thread (a TTS, for offline renders)."""
        ...


def load_voice(
    backend: str, model: Path | None, *, speaker: int | None, length_scale: float | None, language: str | None
) -> Voice:
    """Load a voice (blocking). backend piper: model None is the embedded voice; coqui: a model folder."""
    if backend == "coqui":
        from models.tts_coqui import CoquiTTS

        if model is None:
            raise TTSError("voice backend coqui needs voice.model: a Coqui model folder", recoverable=False)
        return CoquiTTS.load(model, speaker=speaker, language=language)
    return PiperTTS.load(model, speaker=speaker, length_scale=length_scale)


RTF_ALPHA = 0.1
"""Weight of the newest sentence in the running real-time factor."""


@dataclass(frozen=True, slots=True)
class _Sentence:
    voice: Voice
    text: str
    emit: Callable[[SpeechChunk], None]
    stop: threading.Event


@dataclass(frozen=True, slots=True)
class _Synthesis:
    seconds: float
    audio_seconds: float


@dataclass(slots=True)
class SpeechStats:
    """One channel's synthesis counters, for /metrics (TTS real-time factor = seconds / audio_seconds)."""

    sentences: int = 0
    seconds: float = 0.0
    audio_seconds: float = 0.0
    rtf: float = 0.0  # running mean over recent sentences


class ChannelVoice:
    """One channel's TTS: its voice, through the shared worker. `deadline()` says when the channel's
    program runs out of queued speech (loop time; None: nothing queued, the sentence is wanted now)."""

    def __init__(self, service: TTSService, key: str, voice: Voice) -> None:
        self.service = service
        self.key = key
        self.voice = voice
        self.deadline: Callable[[], float | None] = lambda: None

    async def synthesize(self, text: str) -> AsyncIterator[SpeechChunk]:
        def start(emit: Emit, stop: threading.Event) -> asyncio.Future[Any]:
            try:
                job = self.service.batcher.submit(
                    self.key, _Sentence(self.voice, text, emit, stop), deadline=self.deadline()
                )
            except Overloaded as exc:
                raise TTSError(f"speech is queued up: {exc}") from exc
            job.add_done_callback(self._record)
            return job

        async for chunk in relay_chunks(text, start):
            yield chunk

    def _record(self, job: asyncio.Future[Any]) -> None:
        if not job.cancelled() and job.exception() is None:
            self.service.record(self.key, job.result())


class TTSService:
    """Loaded voices and the one synthesis worker shared by every channel."""

    def __init__(self, *, max_queue: int = 64, max_queue_per_channel: int = 8) -> None:
        self.batcher: DeadlineBatcher[_Sentence, _Synthesis] = DeadlineBatcher(
            self._synthesize_batch,
            name="tts",
            max_batch=1,  # one sentence at a time: its caller hears it finished at once
            max_queue=max_queue,
            max_queue_per_key=max_queue_per_channel,
            max_wait_s=0.0,
        )
        self._voices: dict[VoiceKey, asyncio.Task[Voice]] = {}
        self._stats: dict[str, SpeechStats] = {}

    async def voice(
        self,
        model: Path | None = None,
        *,
        speaker: int | None = None,
        length_scale: float | None = None,
        backend: str = "piper",
        language: str | None = None,
    ) -> Voice:
        """A loaded voice (model None: the embedded one), loaded once however many channels use it."""
        key: VoiceKey = (backend, str(model) if model is not None else "builtin", speaker, length_scale, language)
        if key not in self._voices:
            self._voices[key] = asyncio.create_task(
                asyncio.to_thread(
                    load_voice, backend, model, speaker=speaker, length_scale=length_scale, language=language
                )
            )
        try:
            return await asyncio.shield(self._voices[key])
        except Exception:
            self._voices.pop(key, None)  # a later channel may try again (the file may be fixed)
            raise

    def channel(self, key: str, voice: Voice) -> ChannelVoice:
        """The TTS handle of channel `key`, speaking with `voice`."""
        return ChannelVoice(self, key, voice)

    def _synthesize_batch(self, jobs: list[_Sentence]) -> list[_Synthesis | BaseException]:
        """The batch function (worker thread): sentences back to back, each timed against its audio."""
        results: list[_Synthesis | BaseException] = []
        for job in jobs:
            audio = 0.0

            def emit(chunk: SpeechChunk, job: _Sentence = job) -> None:
                nonlocal audio
                audio += chunk.duration
                job.emit(chunk)

            t0 = time.perf_counter()
            try:
                job.voice.synthesize_blocking(job.text, emit, job.stop)
            except Exception as exc:
                results.append(exc)
                continue
            results.append(_Synthesis(time.perf_counter() - t0, audio))
        return results

    def record(self, key: str, synthesis: _Synthesis) -> None:
        stats = self._stats.setdefault(key, SpeechStats())
        stats.sentences += 1
        stats.seconds += synthesis.seconds
        stats.audio_seconds += synthesis.audio_seconds
        if synthesis.audio_seconds > 0:
            rtf = synthesis.seconds / synthesis.audio_seconds
            stats.rtf = rtf if stats.sentences == 1 else stats.rtf + RTF_ALPHA * (rtf - stats.rtf)

    def forget(self, key: str) -> None:
        """Drop a removed channel's counters."""
        self._stats.pop(key, None)
        self.batcher.forget(key)

    def metrics(self) -> dict[str, Any]:
        """For /metrics: the worker's queue, deadline misses and per-channel jobs, and the RTF per channel."""
        seconds = sum(s.seconds for s in self._stats.values())
        audio = sum(s.audio_seconds for s in self._stats.values())
        return {
            **self.batcher.metrics(),
            "voices": len(self._voices),
            "rtf": seconds / audio if audio else 0.0,
            "speech": {key: asdict(stats) for key, stats in self._stats.items()},
        }

    async def aclose(self) -> None:
        await self.batcher.aclose()
