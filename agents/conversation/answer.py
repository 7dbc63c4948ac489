"""A turn's pipeline: viewer message -> grounded reply -> sentences -> TTS -> the Program.

What to say is decided by the channel's Grounder (agents/conversation/grounding.py): fact lines
in their own words (strict), the model's phrasing of them, checked (guided), or the model's own
answer with its numbers checked (free); an "I don't know" line when the facts are silent.
Model text is spoken whole sentence by whole sentence: a sentence is checked before any of it
airs, so one that fails is replaced (or dropped) whole, never spliced onto an aired start, and a
sentence already said in the answer is not said again. Degradations, each logged with its reason:
  no first token in time  -> the cached answer if there is one, else the canned line
                             (guided: the strict answer)
  the LLM fails (any way) -> the same (or the answer just stops if some of it aired)
  TTS fails on a sentence -> the pre-rendered filler line plays instead
Pre-rendered lines are synthesised once at start, so they play even while TTS is down.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable

from agents.conversation.grounding import Grounder, Mode, Reply
from agents.conversation.persona import Memory, Persona
from agents.conversation.sentences import ClauseSplitter, split_sentences
from agents.conversation.speech import speech_segments
from agents.conversation.turns import TurnHandle
from agents.supervisor import cancel_and_wait
from models.protocols import LLM, TTS
from stream.frames import SpeechSegment

log = logging.getLogger(__name__)

SENTENCE_QUEUE = 16
"""Sentences generated but not yet synthesised; the LLM stream waits when this many are queued."""
_REJECTED = "\x00rejected"
"""Put on the sentence queue when guided mode's check refused a sentence: the rest is not said (and if
nothing aired yet, the strict answer is)."""


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

    def has(self, name: str) -> bool:
        return bool(self._lines.get(name))

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
        unknown_text: str = "",
        grounding: Mode = "strict",
        selection: str = "retrieval",
    ) -> None:
        """`grounding`, `selection`: the channel's grounding mode and who picks the lines (grounding.py)."""
        self.name = name
        self.tts = tts
        self.llm = llm
        self.grounder = Grounder(persona, grounding, selection)
        self.memory = memory
        self.lines = lines
        self._enqueue = enqueue
        self.fps = fps
        self.first_token_timeout_s = first_token_timeout_s
        self.output_filter = output_filter
        """Broadcast safety on the LLM's text before TTS: a sentence back (maybe changed), or None to skip it."""
        self.unknown_text = unknown_text
        """The "I don't know" line's text, said through TTS if its pre-rendered audio is missing."""
        self.replies: dict[str, Reply] = {}
        """The last few turns' replies by turn id (what was decided, and why: for the bench and logs)."""

    @property
    def persona(self) -> Persona:
        return self.grounder.persona

    @persona.setter
    def persona(self, persona: Persona) -> None:
        """Chat's `!persona` swaps the character; the channel's grounding stays."""
        self.grounder.persona = persona

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
        """One sentence through TTS onto the Program; on a TTS failure, the filler line instead."""
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

    async def _say_unknown(self, turn: TurnHandle) -> None:
        """The persona's "I don't know" line: pre-rendered, else through TTS."""
        if self.lines.has("unknown"):
            await self.play_line(turn, "unknown")
        elif self.unknown_text:
            await self._speak(turn, self.unknown_text)
        else:
            await self.play_line(turn, "canned")

    def _degrade(self, turn: TurnHandle, why: str) -> None:
        turn.degraded.append(why)
        log.warning("channel %s, turn %s: %s", self.name, turn.turn_id, why)

    # ------------------------------------------------------------------ answering
    async def _answer(self, turn: TurnHandle) -> None:
        llm = self.llm
        request_id = f"{self.name}:{turn.turn_id}:{uuid.uuid4().hex[:8]}"
        reply = await self.grounder.decide(
            turn.text, self.memory, llm, request_id, turn.priority, self.first_token_timeout_s
        )
        self._remember(turn, reply)
        if not reply.remember:
            self.memory.withhold(turn.text)
        log.info("channel %s, turn %s: %s (%s)", self.name, turn.turn_id, reply.kind, "; ".join(reply.notes))
        if llm is not None and any(n.startswith("the model") for n in reply.notes):
            turn.mark("llm_first_token")  # the model's choice is its first (and only) token
        if reply.kind in ("injection", "unknown"):
            turn.mark("first_clause")
            await self._say_unknown(turn)
        elif reply.kind == "free":
            if llm is None:
                await self._fallback(turn, "no LLM is available")
            else:
                stream = self.grounder.free_stream(turn.text, self.memory, llm, request_id, turn.priority)
                await self._stream_answer(turn, stream, reply)
        elif reply.kind == "facts" and self.grounder.mode == "guided" and llm is not None:
            stream = self.grounder.guided_stream(turn.text, reply, llm, f"{request_id}:phrase", turn.priority)
            await self._stream_answer(turn, stream, reply)
        else:
            if reply.kind == "cached":
                turn.mark("cache_hit")
            await self._say(turn, reply.sentences)

    async def _say(self, turn: TurnHandle, sentences: list[str]) -> None:
        turn.mark("first_clause")
        for sentence in sentences:
            await self._speak(turn, sentence)

    def _remember(self, turn: TurnHandle, reply: Reply) -> None:
        self.replies[turn.turn_id] = reply
        while len(self.replies) > 32:
            self.replies.pop(next(iter(self.replies)))

    async def _stream_answer(self, turn: TurnHandle, stream: AsyncIterator[str], reply: Reply) -> None:
        """The model's answer, sentence by checked sentence, while it is still being generated."""
        sentences: asyncio.Queue[str | None] = asyncio.Queue(maxsize=SENTENCE_QUEUE)
        try:
            async with asyncio.timeout(self.first_token_timeout_s):
                first = await anext(stream)
        except Exception as exc:  # any failure of the model's: the viewer hears a fallback, never nothing
            await stream.aclose()  # type: ignore[attr-defined]  # aborts the request if it still runs
            why = (
                f"no first token in {self.first_token_timeout_s:.1f} s"
                if isinstance(exc, TimeoutError)
                else f"the LLM failed before answering ({type(exc).__name__}: {exc or 'empty answer'})"
            )
            if reply.kind == "facts":  # guided: the lines are chosen; say them as they are
                self._degrade(turn, f"{why}; saying the fact lines")
                await self._say(turn, reply.sentences)
            else:
                await self._fallback(turn, why)
            return
        turn.mark("llm_first_token")
        producer = asyncio.create_task(self._produce(turn, first, stream, sentences, reply))
        aired = 0
        try:
            while (sentence := await sentences.get()) is not None and sentence != _REJECTED:
                turn.mark("first_clause")
                await self._speak(turn, sentence)
                aired += 1
        finally:
            await cancel_and_wait(producer)
        if not aired and not turn.interrupted:  # nothing passed its check: silence is no answer
            if reply.kind == "facts":  # guided: the chosen lines, as strict says them
                self._degrade(turn, "no sentence of the model's passed its check; saying the fact lines")
                await self._say(turn, reply.sentences)
            else:
                self._degrade(turn, "no sentence of the answer passed its check; saying the unknown line")
                await self._say_unknown(turn)

    async def _produce(
        self,
        turn: TurnHandle,
        first: str,
        stream: AsyncIterator[str],
        sentences: asyncio.Queue[str | None],
        reply: Reply,
    ) -> None:
        """LLM deltas -> whole, checked sentences on the queue; closing the stream aborts the request."""
        splitter = ClauseSplitter(first_clause_chars=0)  # whole sentences: each is checked before any of it airs
        said: list[str] = []
        try:
            pieces = splitter.feed(first)
            async for delta in stream:
                for sentence in pieces:
                    if not await self._put(turn, sentence, said, sentences, reply):
                        return
                pieces = splitter.feed(delta)
            tail = splitter.flush()
            if tail and not _ends_sentence(tail[0]):
                self._degrade(turn, f"dropped the unfinished last sentence {tail[0]!r}")
                tail = []
            for sentence in pieces + tail:
                if not await self._put(turn, sentence, said, sentences, reply):
                    return
        except Exception as exc:  # what aired stays; the answer ends here
            self._degrade(turn, f"the LLM failed mid-answer ({type(exc).__name__}: {exc})")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            await sentences.put(None)

    async def _put(
        self, turn: TurnHandle, sentence: str, said: list[str], sentences: asyncio.Queue[str | None], reply: Reply
    ) -> bool:
        """Check one sentence and queue what may air; False: the answer ends here."""
        if reply.kind == "facts" and not _ends_sentence(sentence):  # guided: a run-on cannot be checked whole
            reply.rejected.append(sentence)
            self._degrade(turn, f"dropped a run-on {sentence[:60]!r}…; the rest is not said")
            return False
        if reply.kind == "facts":  # guided: nothing beyond the chosen lines
            problems = self.grounder.check(sentence, reply.lines)
            if problems:
                reply.rejected.append(sentence)
                self._degrade(turn, f"rejected {sentence!r} ({', '.join(problems)}); the rest is not said")
                await sentences.put(_REJECTED)
                return False
            checked: str | None = sentence
        else:
            checked = self.persona.knowledge.guard(sentence, turn.text, said)
            if checked != sentence:
                reply.rejected.append(sentence)
                self._degrade(turn, f"replaced an unsupported number claim {sentence!r}, whole, with {checked!r}")
        if checked and self.output_filter is not None:
            filtered = self.output_filter(checked)
            if filtered != checked:
                what = "skipped a sentence" if filtered is None else "changed a sentence"
                self._degrade(turn, f"the output filter {what}")
            checked = filtered
        if not checked:
            return True
        if _normal(checked) in {_normal(s) for s in said}:
            self._degrade(turn, f"skipped {checked!r}: already said in this answer")
            return True
        said.append(checked)
        await sentences.put(checked)
        return True

    async def _fallback(self, turn: TurnHandle, why: str) -> None:
        cached = self.persona.knowledge.cached_answer(turn.text, threshold=0.3)
        if cached is not None:
            self._degrade(turn, f"{why}; saying the closest cached answer")
            for sentence in split_sentences(cached):
                await self._speak(turn, sentence)
        else:
            self._degrade(turn, f"{why}; playing the canned answer")
            await self.play_line(turn, "canned")


def _ends_sentence(text: str) -> bool:
    return bool(re.search(r"[.!?…。！？][\"')\]”’»]*$", text.strip()))


def _normal(sentence: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", sentence.lower()))
