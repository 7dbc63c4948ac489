"""A channel's program: the one A/V timeline every output of the channel shows.

Audio is the master clock. The Program emits a 20 ms audio frame at every audio position and a
video frame whenever the position crosses a frame start, so video is stamped from the audio
position and cannot drift. Speech segments are laid on the timeline back to back; silence and
idle frames fill every gap.

Video frames are rendered a few frames ahead of the clock by a FrameSource (the channel's face
renderer): four (160 ms at 25 fps), since a render request crosses the channel's loop, a batcher
and a thread, each of which a busy process can hold for tens of ms; with three, 1-3 % of frames
came late under bench/load.py's 100 viewers and 500 event streams. A frame not ready when due
shows the previous one again and counts the miss: the picture never stops. Speech is scheduled no
earlier than the first frame not yet sent to the renderer, so no frame rendered idle is thrown away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream.clock import AUDIO_FRAME_SAMPLES, AUDIO_RATE, Clock, RealClock, VideoFormat
from stream.frames import EventKind, ProgramEvent, SpeechSegment

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT_S = 5.0
"""At start, wait this long at most for the renderer before going on air with the still frame."""
MAX_LAG_S = 0.5
"""A live program this far behind its clock (a stalled loop) re-bases instead of bursting."""


class FrameSource(Protocol):
    """Renders the channel's face for consecutive video frames.

    A source may also define `attach(program)`: the Program calls it once, so a source that shares
    a renderer with other channels can schedule each render by when its frames air (`Program.due`).
    """

    async def render(self, first: int, cues: np.ndarray) -> Sequence[np.ndarray]:
        """Frames first .. first+len(cues)-1, each in the encoder's format (I420; stream/frames.py).

        cues[i] is the speech cue row of frame first+i (all zeros while nobody speaks).
        """
        ...

    def still(self) -> np.ndarray:
        """A frame to show when nothing else is available (before the first render, on failure)."""
        ...


class ProgramSink(Protocol):
    """Where the program goes: in practice the channel's one encoder."""

    def on_audio(self, pcm: np.ndarray, sample: int) -> None: ...

    def on_video(self, image: np.ndarray, frame: int) -> None: ...

    async def ready(self) -> None:
        """Return once the sink can take a frame without dropping it (only offline runs wait)."""
        ...


@dataclass(slots=True, eq=False)
class _Slot:
    segment: SpeechSegment
    start: int  # audio sample on the timeline
    end: int
    started: bool = False
    cut: bool = False
    words_aired: int = 0


class Program:
    def __init__(
        self,
        fmt: VideoFormat,
        source: FrameSource,
        sink: ProgramSink,
        *,
        cue_dims: int = 3,
        clock: Clock | None = None,
        lookahead: int = 4,
        render_chunk: int = 2,
        name: str = "",
    ) -> None:
        self.fmt = fmt
        self.source = source
        self.sink = sink
        self.cue_dims = cue_dims
        self.clock: Clock = clock or RealClock()
        self.lookahead = lookahead
        self.render_chunk = render_chunk
        self.name = name
        self.stats: Counter[str] = Counter()
        self._slots: deque[_Slot] = deque()
        self._listeners: list[Callable[[ProgramEvent], None]] = []
        self._audio_pos = 0  # next audio sample to emit
        self._video_next = 0  # next video frame to emit
        self._render_next = 0  # next video frame to ask the source for
        self._frames: dict[int, np.ndarray] = {}
        self._last_image: np.ndarray | None = None
        self._frame_ready = asyncio.Event()
        self._need_frames = asyncio.Event()
        self._segment_ids = 0
        self._epoch = 0  # bumped when rendered-ahead frames become wrong (a cut)
        self._failing = 0  # render calls failed in a row
        self._last_failure: str | None = None
        self._t0: float | None = None  # clock time of timeline second 0 while running live
        attach = getattr(source, "attach", None)
        if attach is not None:
            attach(self)

    # ------------------------------------------------------------------ timeline
    @property
    def position(self) -> float:
        """Seconds of program emitted so far."""
        return self._audio_pos / AUDIO_RATE

    @property
    def video_position(self) -> float:
        """Seconds of video emitted so far (equals `position` within a frame: both come from one clock)."""
        return self._video_next / self.fmt.fps

    @property
    def scheduled_until(self) -> float:
        """Timeline second at which the last queued speech ends (or the current position)."""
        end = self._slots[-1].end if self._slots else self._audio_pos
        return max(end, self._audio_pos) / AUDIO_RATE

    @property
    def speaking(self) -> bool:
        return bool(self._slots)

    def clock_time(self, second: float) -> float | None:
        """The clock time (the event loop's, for a live program) at which timeline `second` goes on air.

        Shared services schedule a channel's work by it: the frame, or the speech, needed on air
        first is made first. None until the program runs on a real-time clock (then it is wanted
        as soon as possible).
        """
        return None if self._t0 is None else self._t0 + second

    def due(self, frame: int) -> float | None:
        """The clock time at which video frame `frame` goes on air (see clock_time)."""
        return self.clock_time(self.fmt.frame_start(frame) / AUDIO_RATE)

    def audio_between(self, start: int, end: int) -> np.ndarray:
        """int16 audio of timeline samples start..end-1 as it stands queued now (silence where nothing is,
        and before the timeline's start): what an audio-driven renderer hears around a frame."""
        out = np.zeros(max(0, end - start), np.int16)
        for slot in self._slots:
            lo, hi = max(start, slot.start), min(end, slot.end)
            if lo < hi:
                out[lo - start : hi - start] = slot.segment.pcm[lo - slot.start : hi - slot.start]
        return out

    def add_listener(self, listener: Callable[[ProgramEvent], None]) -> None:
        self._listeners.append(listener)

    def enqueue(self, segment: SpeechSegment) -> float:
        """Lay `segment` on the timeline after everything already queued; returns its start (s)."""
        if segment.cues.shape[1] != self.cue_dims:
            raise ValueError(f"cues have {segment.cues.shape[1]} columns, this program takes {self.cue_dims}")
        if not self._slots:  # idle: the frames rendered ahead show the idle face; speak from the next frame
            self._render_again_from_now()
        horizon = max(self.fmt.frame_start(self._render_next), self._audio_pos)
        start = max(horizon, self._slots[-1].end if self._slots else 0)
        self._segment_ids += 1
        segment.segment_id = self._segment_ids
        self._slots.append(_Slot(segment, start, start + len(segment.pcm)))
        self.stats["segments"] += 1
        return start / AUDIO_RATE

    def cut(self, turn_id: str) -> float:
        """Stop `turn_id` now: its audio ends at the current 20 ms frame boundary, its queued
        segments are dropped, and frames rendered ahead with its mouth are rendered again idle,
        so the face is back to rest within a frame or two. Returns the seconds of it that aired.
        """
        played = 0.0
        for slot in list(self._slots):
            if slot.segment.turn_id != turn_id:
                continue
            slot.cut = True
            if slot.started:
                slot.end = min(slot.end, self._audio_pos)
                played += (slot.end - slot.start) / AUDIO_RATE
            else:  # never aired: report it finished with nothing played, so every segment is accounted for
                self._slots.remove(slot)
                slot.end = slot.start
                self._publish(EventKind.SEGMENT_FINISHED, slot, self._audio_pos)
        self._render_again_from_now()
        # speech of later turns moves up into the gap instead of waiting for it
        end = max(self.fmt.frame_start(self._render_next), self._audio_pos)
        for slot in self._slots:
            if slot.started:
                end = max(end, slot.end)
                continue
            length = slot.end - slot.start
            slot.start, slot.end = end, end + length
            end = slot.end
        self.stats["cuts"] += 1
        return played

    def _render_again_from_now(self) -> None:
        """Forget the frames rendered ahead (and any render in flight): they are drawn again from the
        next frame on, with the timeline as it is now."""
        if self._render_next > self._video_next:
            self._frames = {k: v for k, v in self._frames.items() if k < self._video_next}
            self._render_next = self._video_next
            self._epoch += 1
            self._need_frames.set()

    def _cues_for(self, first: int, n: int) -> np.ndarray:
        """Cue rows of frames first..first+n-1: each frame takes the cue at its mid-time."""
        out = np.zeros((n, self.cue_dims), np.float32)
        half = self.fmt.samples_per_frame / 2
        for i in range(n):
            t = self.fmt.frame_start(first + i) + half
            slot = next((s for s in self._slots if s.start <= t < s.end), None)
            if slot is None:
                continue
            seg = slot.segment
            pos = (t - slot.start) / AUDIO_RATE * seg.cue_rate - 0.5
            lo = int(np.clip(np.floor(pos), 0, len(seg.cues) - 1))
            hi = min(lo + 1, len(seg.cues) - 1)
            w = float(np.clip(pos - lo, 0.0, 1.0))
            out[i] = (1 - w) * seg.cues[lo] + w * seg.cues[hi]
        return out

    # ------------------------------------------------------------------ running
    async def run(self, until: float | None = None) -> None:
        """Emit the program in real time (or as fast as an offline clock allows).

        Runs until cancelled, or until `until` seconds of program have been emitted.
        """
        stop_at = None if until is None else round(until * AUDIO_RATE)
        renderer = asyncio.create_task(self._render_ahead(), name=f"program-render:{self.name}")
        try:
            if self.clock.realtime:  # start the clock once the first frame exists: no late start
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FIRST_FRAME_TIMEOUT_S):
                        await self._first_frame()
            t0 = self.clock.now() - self._audio_pos / AUDIO_RATE
            self._t0 = t0 if self.clock.realtime else None
            while stop_at is None or self._audio_pos < stop_at:
                next_audio = self._audio_pos
                next_video = self.fmt.frame_start(self._video_next)
                due = t0 + min(next_audio, next_video) / AUDIO_RATE
                if self.clock.realtime:
                    lag = self.clock.now() - due
                    if lag > MAX_LAG_S:
                        log.warning("program %s fell %.2f s behind its clock; re-basing", self.name, lag)
                        self.stats["rebases"] += 1
                        t0 += lag
                        due += lag
                        self._t0 = t0
                await self.clock.sleep_until(due)
                if next_audio <= next_video:
                    self._emit_audio()
                else:
                    await self._emit_video()
        finally:
            self._t0 = None
            renderer.cancel()
            await asyncio.gather(renderer, return_exceptions=True)

    async def _first_frame(self) -> None:
        while self._video_next not in self._frames:
            self._frame_ready.clear()
            await self._frame_ready.wait()

    def _emit_audio(self) -> None:
        a, b = self._audio_pos, self._audio_pos + AUDIO_FRAME_SAMPLES
        pcm = np.zeros(AUDIO_FRAME_SAMPLES, np.int16)
        for slot in self._slots:
            if slot.start >= b:
                break
            lo, hi = max(a, slot.start), min(b, slot.end)
            if lo < hi:
                pcm[lo - a : hi - a] = slot.segment.pcm[lo - slot.start : hi - slot.start]
            if not slot.started and slot.start < b:
                slot.started = True
                self._publish(EventKind.SEGMENT_STARTED, slot, slot.start)
            self._air_words(slot, min(b, slot.end))
        while self._slots and self._slots[0].end <= b:
            slot = self._slots.popleft()
            self._publish(EventKind.SEGMENT_FINISHED, slot, slot.end)
        self.sink.on_audio(pcm, a)
        self._audio_pos = b
        self.stats["audio_frames"] += 1

    async def _emit_video(self) -> None:
        n = self._video_next
        if not self.clock.realtime:
            await self.sink.ready()
            while n not in self._frames:
                self._frame_ready.clear()
                self._need_frames.set()
                await self._frame_ready.wait()
        image = self._frames.pop(n, None)
        for stale in [k for k in self._frames if k < n]:
            del self._frames[stale]
        if image is None:
            self.stats["late_frames"] += 1
            image = self._last_image if self._last_image is not None else self.source.still()
        self._last_image = image
        self.sink.on_video(image, n)
        self._video_next = n + 1
        self.stats["video_frames"] += 1
        self._need_frames.set()

    async def _render_ahead(self) -> None:
        """Keep `lookahead` frames rendered ahead of the clock, one request in flight at a time."""
        while True:
            self._render_next = max(self._render_next, self._video_next)  # never render the past
            target = self._video_next + self.lookahead
            if self._render_next >= target:
                self._need_frames.clear()
                await self._need_frames.wait()
                continue
            first = self._render_next
            n = min(self.render_chunk, target - first)
            cues = self._cues_for(first, n)
            self._render_next = first + n
            epoch = self._epoch
            try:
                frames = await self.source.render(first, cues)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.clock.realtime:
                    raise  # an offline render must not silently repeat frames
                self._render_failed(first, n, exc)  # the frames stay missing: the last picture repeats
                continue
            self._render_worked()
            if epoch != self._epoch:  # the timeline changed (a cut) while these were rendering
                continue
            for i in range(n):
                if first + i >= self._video_next:
                    self._frames[first + i] = frames[i]
            self._frame_ready.set()

    def _render_failed(self, first: int, n: int, exc: Exception) -> None:
        self.stats["render_errors"] += 1
        self._failing += 1
        why = f"{type(exc).__name__}: {exc}"
        # a failing model must not flood the log: its first failures, then every 10x; a new cause at once
        if why != self._last_failure or self._failing in (1, 10, 100) or self._failing % 1000 == 0:
            log.warning(
                "program %s: rendering frames %d..%d failed (%s; %d failures in a row); repeating the last frame",
                self.name,
                first,
                first + n - 1,
                why,
                self._failing,
            )
        self._last_failure = why

    def _render_worked(self) -> None:
        if self._failing:
            log.info("program %s: rendering works again after %d failures", self.name, self._failing)
        self._failing, self._last_failure = 0, None

    def _air_words(self, slot: _Slot, until: int) -> None:
        """Report the words whose sound starts before sample `until` (a cut segment's later words never air)."""
        words = slot.segment.words
        while slot.words_aired < len(words):
            offset, word = words[slot.words_aired]
            at = slot.start + round(offset * AUDIO_RATE)
            if at >= until:
                return
            slot.words_aired += 1
            self._publish(EventKind.WORD, slot, at, word)

    def _publish(self, kind: EventKind, slot: _Slot, sample: int, text: str | None = None) -> None:
        seg = slot.segment
        played = (slot.end - slot.start) / AUDIO_RATE if kind is EventKind.SEGMENT_FINISHED else 0.0
        duration = len(seg.pcm) / AUDIO_RATE
        event = ProgramEvent(
            kind,
            seg.turn_id,
            seg.segment_id,
            seg.text if text is None else text,
            sample / AUDIO_RATE,
            played,
            duration,
            slot.cut,
        )
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("program %s: event listener failed", self.name)
