"""A turn's pipeline: LLM deltas -> clauses -> TTS -> the Program, while the LLM keeps going.

The first clause goes to TTS as soon as it is complete, so the first words air while the rest
of the answer is still being generated. Degradations, each logged with its reason:
  no first token in time  -> the cached answer if there is one, else the canned line
  the LLM fails           -> the same (or the answer just stops, if some of it already aired)
  TTS fails on a clause   -> the pre-rendered filler line plays instead
Pre-rendered lines are synthesised once at start, so they play even while TTS is down.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable

from agents.conversation.persona import Memory, Persona
from agents.conversation.sentences import ClauseSplitter, split_sentences
from agents.conversation.speech import speech_segments
from agents.conversation.turns import TurnHandle
from agents.supervisor import cancel_and_wait
from models.protocols import LLM, TTS, GenerationParams, LLMError
from stream.frames import SpeechSegment

log = logging.getLogger(__name__)

CLAUSE_QUEUE = 16
"""Clauses generated but not yet synthesised; the LLM stream waits when this many are queued."""


class PrerenderedLines:
    """A few lines rendered at start-up, so they can air when TTS itself is failing."""

    def __init__(self) -> None:
        self._lines: dict[str, list[SpeechSegment]] = {}

    async def prepare(self, tts: TTS, fps: int, lines: dict[str, str]) -> None:
        for name, text in lines.items():
            try:
                self._lines[name] = [s async for s in speech_segments(tts, text, "prerender", fps)]
            except Exception as exc:
                log.error("could not pre-render the %s line (%s); it will be skipped when needed", name, exc)

    def segments(self, name: str, turn_id: str) -> list[SpeechSegment]:
        return [SpeechSegment(s.pcm, s.cues, s.cue_rate, turn_id, text=s.text) for s in self._lines.get(name, [])]


class TurnRunner:
    """Runs turns for one channel: `run(turn)` is the body of the turn's task."""

    def __init__(
        self,
        *,
        name: str,
        tts: TTS,
        llm: LLM | None,
        persona: Persona,
        memory: Memory,
        lines: PrerenderedLines,
        enqueue: Callable[[SpeechSegment], None],
        fps: int,
        first_token_timeout_s: float,
        output_filter: Callable[[str], str | None] | None = None,
    ) -> None:
        self.name = name
        self.tts = tts
        self.llm = llm
        self.persona = persona
        self.memory = memory
        self.lines = lines
        self._enqueue = enqueue
        self.fps = fps
        self.first_token_timeout_s = first_token_timeout_s
        self.output_filter = output_filter
        """Broadcast safety on the LLM's text before TTS: a clause back (maybe changed), or None to skip it."""

    async def run(self, turn: TurnHandle) -> None:
        if turn.kind == "say":
            for sentence in split_sentences(turn.text):
                await self._speak(turn, sentence)
        elif turn.kind == "line":  # a pre-rendered line by name ("didnt_hear", ...)
            await self.play_line(turn, turn.text)
        else:
            await self._answer(turn)

    # ------------------------------------------------------------------ speaking
    async def _air(self, turn: TurnHandle, segment: SpeechSegment) -> None:
        """Put `segment` on the Program; a held turn's first one waits there for its go."""
        if not turn.go.is_set():
            turn.mark("held")  # ready before the viewer's end of speech was confirmed
            await turn.go.wait()
        turn.segments_pending += 1
        turn.spoken.append(segment.text)
        turn.mark("first_segment")
        self._enqueue(segment)

    async def _speak(self, turn: TurnHandle, text: str) -> None:
        """One clause through TTS onto the Program; on a TTS failure, the filler line instead."""
        try:
            async for segment in speech_segments(self.tts, text, turn.turn_id, self.fps):
                turn.mark("tts_first_chunk")
                await self._air(turn, segment)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._degrade(turn, f"TTS failed ({type(exc).__name__}: {exc}); playing the filler line")
            await self.play_line(turn, "filler")

    async def play_line(self, turn: TurnHandle, name: str) -> None:
        for segment in self.lines.segments(name, turn.turn_id):
            await self._air(turn, segment)

    def _degrade(self, turn: TurnHandle, why: str) -> None:
        turn.degraded.append(why)
        log.warning("channel %s, turn %s: %s", self.name, turn.turn_id, why)

    # ------------------------------------------------------------------ answering
    async def _answer(self, turn: TurnHandle) -> None:
        knowledge = self.persona.knowledge
        cached = knowledge.cached_answer(turn.text) or knowledge.fact_answer(turn.text)
        if cached is not None:
            turn.mark("cache_hit")
            for sentence in split_sentences(cached):
                await self._speak(turn, sentence)
            return
        if self.llm is None:
            await self._fallback(turn, "no LLM is available")
            return
        messages = self.persona.messages(turn.text, self.memory)
        params = GenerationParams(max_tokens=self.persona.max_tokens)
        request_id = f"{self.name}:{turn.turn_id}:{uuid.uuid4().hex[:8]}"
        stream = self.llm.generate(messages, params, request_id, turn.priority)
        clauses: asyncio.Queue[str | None] = asyncio.Queue(maxsize=CLAUSE_QUEUE)
        try:
            async with asyncio.timeout(self.first_token_timeout_s):
                first = await anext(stream)
        except (TimeoutError, LLMError, StopAsyncIteration) as exc:
            await stream.aclose()  # type: ignore[attr-defined]  # aborts the request if it still runs
            why = (
                f"no first token in {self.first_token_timeout_s:.1f} s"
                if isinstance(exc, TimeoutError)
                else f"the LLM failed before answering ({exc or 'empty answer'})"
            )
            await self._fallback(turn, why)
            return
        turn.mark("llm_first_token")
        producer = asyncio.create_task(self._produce(turn, first, stream, clauses))
        try:
            while (clause := await clauses.get()) is not None:
                turn.mark("first_clause")
                await self._speak(turn, clause)
        finally:
            await cancel_and_wait(producer)

    async def _produce(
        self, turn: TurnHandle, first: str, stream: AsyncIterator[str], clauses: asyncio.Queue[str | None]
    ) -> None:
        """LLM deltas -> guarded clauses on the queue; closing the stream aborts the request."""
        splitter = ClauseSplitter()
        try:
            pieces = splitter.feed(first)
            async for delta in stream:
                for clause in pieces:
                    await self._put(turn, clause, clauses)
                pieces = splitter.feed(delta)
            for clause in pieces + splitter.flush():
                await self._put(turn, clause, clauses)
        except LLMError as exc:
            self._degrade(turn, f"the LLM failed mid-answer: {exc}")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            await clauses.put(None)

    async def _put(self, turn: TurnHandle, clause: str, clauses: asyncio.Queue[str | None]) -> None:
        guarded = self.persona.knowledge.guard(clause, turn.text)
        if guarded != clause:
            self._degrade(turn, f"replaced an unsupported number claim {clause!r} with {guarded!r}")
        if guarded and self.output_filter is not None:
            filtered = self.output_filter(guarded)
            if filtered != guarded:
                what = "skipped a clause" if filtered is None else "changed a clause"
                self._degrade(turn, f"the output filter {what}")
            guarded = filtered
        if guarded:
            await clauses.put(guarded)

    async def _fallback(self, turn: TurnHandle, why: str) -> None:
        cached = self.persona.knowledge.cached_answer(turn.text, threshold=0.3)
        if cached is not None:
            self._degrade(turn, f"{why}; saying the closest cached answer")
            for sentence in split_sentences(cached):
                await self._speak(turn, sentence)
        else:
            self._degrade(turn, f"{why}; playing the canned answer")
            await self.play_line(turn, "canned")
