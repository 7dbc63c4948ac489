"""One viewer's microphone -> speech_start / partial / final / speech_end events.

Voice activity (Silero VAD, per 32 ms window) decides when a viewer starts and stops talking;
the shared WhisperASR transcribes the utterance: partials while it goes on, a final at its end.
The final's transcript starts early, once a short tail of silence is in; when it is ready while the
silence is still being waited out it is reported as a likely final, so that the answer can be
prepared during the rest of the wait (withdrawn by "resumed" if the viewer goes on talking).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import av
import numpy as np

from models.asr_whisper import WhisperASR
from models.protocols import ASREvent
from models.vad import SAMPLE_RATE, WINDOW_SAMPLES, Endpointer, SileroVAD, ms_to_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """How a ListenSession decides that a viewer started and stopped talking (times on the audio clock)."""

    threshold: float = 0.5
    """Silero speech probability at or above which a 32 ms window counts as voice."""
    silence_threshold: float = 0.35
    """Below this a window counts as silence; in between it keeps the current state (see Endpointer)."""
    min_speech_ms: int = 200
    """Voice needed before speech_start: clicks, a cough or a knock are shorter and must not barge in."""
    onset_gap_ms: int = 160
    """Silence tolerated while those first min_speech_ms add up (stops between syllables); longer starts over."""
    end_silence_ms: int = 600
    """Silence that ends an utterance: shorter cuts viewers off at a pause, longer delays the answer."""
    partial_interval_ms: int = 800
    """Audio between partial transcripts; one is skipped while the previous one still runs."""
    pad_ms: int = 300
    """Audio kept before the onset for the transcript. Whisper misreads words that start right at the
    edge (tiny.en heard "running queues" for "running shoes" with 0.13 s before the voice)."""
    tail_ms: int = 150
    """Audio kept after the voice for the final transcript. The final starts once this much silence is
    in (it is used if the silence then lasts end_silence_ms): a shorter tail gives it a longer head start."""
    max_utterance_s: float = 30.0
    """Audio kept of one utterance (Whisper reads 30 s windows); older audio is dropped, with a log line."""
    final_beam_size: int = 1
    """Beam for the final transcript; partials are always greedy."""
    max_events: int = 64
    """Events waiting for the reader. When full the oldest partial (or likely final, or resumed) is
    dropped; speech_start, final and speech_end never are: while they fill the queue, new utterances
    are ignored (logged) instead."""

    def __post_init__(self) -> None:
        if self.max_events < 4:
            raise ValueError("max_events must leave room for one utterance's events (at least 4)")
        if self.final_beam_size < 1:
            raise ValueError("final_beam_size must be at least 1")


DROPPABLE = frozenset({"partial", "likely_final", "resumed"})
"""Events a full queue may drop: each only says something sooner that a later event says for sure."""


@dataclass(slots=True)
class _Transcript:
    """A partial or final event whose text is still being transcribed; it holds its place in the order."""

    kind: str
    at: float
    job: asyncio.Future[str]


class ListenSession:
    """One viewer's microphone: push() its WebRTC frames, read ASREvents from events().

    push() runs the VAD inline (~0.1 ms per 32 ms window) and must be called on the event loop's
    thread; transcription happens in the WhisperASR pool. Events come out in the order the audio
    implies (speech_start, partials, final, speech_end), even when a transcript finishes late.
    """

    def __init__(self, asr: WhisperASR, options: ListenOptions | None = None, *, vad: SileroVAD | None = None):
        self.asr = asr
        self.options = opts = options or ListenOptions()
        self._vad = vad or SileroVAD()
        self._endpointer = Endpointer(
            threshold=opts.threshold, silence_threshold=opts.silence_threshold, min_speech_ms=opts.min_speech_ms,
            onset_gap_ms=opts.onset_gap_ms, end_silence_ms=opts.end_silence_ms,
        )  # fmt: skip
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._pad, self._partial_every = ms_to_samples(opts.pad_ms), ms_to_samples(opts.partial_interval_ms)
        self._tail = ms_to_samples(opts.tail_ms)
        self._max_utterance = ms_to_samples(opts.max_utterance_s * 1000)
        self._leftover = np.zeros(0, dtype=np.float32)  # resampled audio short of a whole window
        self._clock = 0  # samples analysed: the start of the next window
        self._audio: deque[np.ndarray] = deque()  # windows: the utterance (or, when idle, a pre-roll)
        self._audio_start = 0  # sample index of _audio[0]
        self._utterance_start = self._partial_due = 0
        self._partial: asyncio.Future[str] | None = None
        self._early: tuple[int, int, _Transcript] | None = None  # utterance start, until, its likely final
        self.stats = {"early_finals": 0, "early_dropped": 0}
        """Finals read from a transcript begun while the silence was still being waited out, and such
        transcripts dropped because the viewer went on talking."""
        self._trimmed = self._deaf = False  # whether the current trim / stall was logged
        self._outbox: deque[ASREvent | _Transcript] = deque()  # ahead of the queue, in order
        self._queue: deque[ASREvent] = deque()
        self._wake = asyncio.Event()
        self._closed = False

    # ----------------------------------------------------------------- input
    def push(self, frame: av.AudioFrame) -> None:
        """Add one frame of the viewer's audio (any rate and layout; aiortc gives 48 kHz stereo s16)."""
        if self._closed:
            return
        pieces = [self._leftover, *(out.to_ndarray()[0] for out in self._resampler.resample(frame))]
        audio = np.concatenate(pieces)
        whole = len(audio) - len(audio) % WINDOW_SAMPLES
        for offset in range(0, whole, WINDOW_SAMPLES):
            self._on_window(audio[offset : offset + WINDOW_SAMPLES])
        self._leftover = audio[whole:]

    def _on_window(self, window: np.ndarray) -> None:
        start, ends = self._clock, self._endpointer
        self._clock += WINDOW_SAMPLES
        self._audio.append(window)
        match ends.update(start, self._vad.speech_prob(window)):
            case ("start", onset):
                self._begin(onset)
            case ("end", voice_end):
                final_until = min(voice_end + self._tail, self._clock)
                self._transcribe("final", voice_end, final_until, job=self._take_early(final_until))
                self._emit(ASREvent("speech_end", voice_end / SAMPLE_RATE))
            case None if ends.silence_began is not None:
                self._transcribe_early(ends.silence_began)
            case None if ends.speaking and not ends.in_silence and self._clock >= self._partial_due:
                # never two at once (no pile-up) and not in trailing silence (it adds no words)
                if self._partial is None or self._partial.done():
                    self._partial_due = self._clock + self._partial_every
                    self._partial = self._transcribe("partial", self._clock, self._clock)
        if ends.silence_began is None:  # the viewer went on talking (or the utterance ended)
            self._drop_early()
        self._trim()

    def _begin(self, onset: int) -> None:
        # an utterance adds 3 events that are never dropped: start one only if they fit
        backlog = len(self._outbox) + sum(event.kind not in DROPPABLE for event in self._queue)
        if backlog + 3 > self.options.max_events:
            if not self._deaf:
                log.warning("listener is %d events behind: ignoring speech until it reads them", backlog)
            self._deaf = True
            self._endpointer.reset()
            return
        self._deaf = self._trimmed = False
        self._utterance_start = max(onset - self._pad, self._audio_start)
        self._partial_due, self._partial = onset + self._partial_every, None
        self._emit(ASREvent("speech_start", onset / SAMPLE_RATE))

    def _trim(self) -> None:
        """Bound the audio held: the utterance's last max_utterance_s, or when idle just the pre-roll."""
        if self._endpointer.speaking:
            keep_from = max(self._utterance_start, self._clock - self._max_utterance)
            if keep_from > self._utterance_start:
                if not self._trimmed:
                    log.warning("utterance longer than %.0f s: dropping its oldest audio", self.options.max_utterance_s)
                self._trimmed, self._utterance_start = True, keep_from
        else:
            candidate = self._endpointer.candidate
            keep_from = (self._clock if candidate is None else candidate) - self._pad
        while self._audio and self._audio_start + WINDOW_SAMPLES <= keep_from:
            self._audio.popleft()
            self._audio_start += WINDOW_SAMPLES

    # ---------------------------------------------------------------- output
    def _transcribe_early(self, silence_began: int) -> None:
        """The voice may have ended: once the final's audio (the voice and its tail) is in, start the
        final's transcript, so that it is ready when the silence has lasted end_silence_ms instead of
        starting then (a decode takes ~0.1-0.5 s on a shared CPU core). Ready before then, it goes
        out as a likely final."""
        until = silence_began + self._tail
        if self._early is None and self._clock >= until:
            likely = _Transcript("likely_final", silence_began / SAMPLE_RATE, self._submit(until, final=True))
            likely.job.add_done_callback(lambda _: self._flush())
            self._early = (self._utterance_start, until, likely)
            self._emit(likely)

    def _take_early(self, until: int) -> asyncio.Future[str] | None:
        """The early transcript, if it read exactly the audio the final reads; else it is dropped.
        A likely final not out yet is withdrawn: the final itself follows it at once."""
        if self._early is not None and self._early[:2] == (self._utterance_start, until):
            likely, self._early = self._early[2], None
            if likely in self._outbox:
                self._outbox.remove(likely)
            self.stats["early_finals"] += 1
            return likely.job
        self._drop_early()
        return None

    def _drop_early(self) -> None:
        """The viewer went on talking: the early transcript is void. Cancelled unless it had finished;
        then its likely final has gone out (or will, in order) and "resumed" withdraws it."""
        if self._early is not None:
            likely, self._early = self._early[2], None
            if not likely.job.cancel() and not self._closed:
                self._emit(ASREvent("resumed", self._clock / SAMPLE_RATE))
            self.stats["early_dropped"] += 1

    def _submit(self, until: int, *, final: bool) -> asyncio.Future[str]:
        held = np.concatenate(self._audio)
        audio = held[self._utterance_start - self._audio_start : until - self._audio_start]
        beam_size = self.options.final_beam_size if final else 1
        try:
            work = self.asr.transcribe(audio, beam_size=beam_size, urgent=final)
        except RuntimeError as exc:  # the model was closed under us: fail this transcript like any other
            work = concurrent.futures.Future()
            work.set_exception(exc)
        return asyncio.wrap_future(work, loop=asyncio.get_running_loop())

    def _transcribe(
        self, kind: str, at: int, until: int, *, job: asyncio.Future[str] | None = None
    ) -> asyncio.Future[str]:
        job = job or self._submit(until, final=kind == "final")
        self._emit(_Transcript(kind, at / SAMPLE_RATE, job))
        job.add_done_callback(lambda _: self._flush())
        return job

    def _emit(self, item: ASREvent | _Transcript) -> None:
        self._outbox.append(item)
        self._flush()

    def _flush(self) -> None:
        """Move every event at the head of the outbox whose text is ready into the reader's queue."""
        while self._outbox:
            head = self._outbox[0]
            if isinstance(head, _Transcript):
                if not head.job.done():
                    return
                event = self._settle(head)
            else:
                event = head
            self._outbox.popleft()
            if event is not None:
                self._enqueue(event)

    @staticmethod
    def _settle(pending: _Transcript) -> ASREvent | None:
        if pending.job.cancelled():
            return None
        if (error := pending.job.exception()) is not None:
            log.error("Whisper failed on a %s transcript", pending.kind, exc_info=error)
            text = ""
        else:
            text = pending.job.result()
        # an empty final still ends the turn (the caller asks again); an empty partial says nothing
        return ASREvent(pending.kind, pending.at, text) if text or pending.kind == "final" else None

    def _enqueue(self, event: ASREvent) -> None:
        if len(self._queue) >= self.options.max_events:
            oldest = next((queued for queued in self._queue if queued.kind in DROPPABLE), None)
            if oldest is not None:
                self._queue.remove(oldest)
            elif event.kind in DROPPABLE:  # the newest droppable is the oldest there is
                return
            # else unreachable: _begin reserved room for every speech_start, final and speech_end
        self._queue.append(event)
        self._wake.set()

    @property
    def position(self) -> float:
        """Seconds of this viewer's audio analysed so far: the clock that events' `at` is on."""
        return self._clock / SAMPLE_RATE

    async def events(self) -> AsyncIterator[ASREvent]:
        """The session's events, in order, until aclose() (then what was already queued). One reader."""
        while True:
            if self._queue:
                yield self._queue.popleft()
            elif self._closed:
                return
            else:
                self._wake.clear()
                await self._wake.wait()

    async def aclose(self) -> None:
        """Stop listening: later frames are ignored and transcripts still running are abandoned."""
        self._closed = True
        self._drop_early()
        for item in self._outbox:
            if isinstance(item, _Transcript):
                item.job.cancel()
        self._outbox.clear()
        self._wake.set()
