"""A channel's talking half: turns one at a time, persona and memory, and the viewers' voices.

  chat / page / voice -> start_turn -> TurnRunner (LLM -> clauses -> TTS) -> the Program's timeline
  the Program's events (what actually aired) -> turn bookkeeping, memory, captions for the pages

It implements TurnControl, the one interface chat, the page, the listener and the admin API use,
and reaches the channel's media only through the Program it speaks on (enqueue, cut, events).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.config import ChannelConfig
from agents.conversation.answer import PrerenderedLines, TurnRunner
from agents.conversation.control import ChannelBusy, ChannelPaused
from agents.conversation.events import EventHub
from agents.conversation.listening import Listener
from agents.conversation.persona import Knowledge, Memory, Persona
from agents.conversation.speech import speech_deadline
from agents.conversation.turns import TurnHandle
from agents.supervisor import TaskSet
from models.protocols import LLM, TTS
from models.tts_service import ChannelVoice
from stream.frames import EventKind, ProgramEvent
from stream.program import Program

log = logging.getLogger(__name__)

MAX_PENDING_TURNS = 4
"""Turns waiting for their go; beyond this a new one is refused (the viewer is told to wait)."""


class Conversation:
    """Turns of one channel (TurnControl), spoken on its Program once `attach`ed."""

    def __init__(
        self,
        cfg: ChannelConfig,
        *,
        tts: TTS,
        llm: Callable[[], LLM | None] = lambda: None,
        asr: Any = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.tts = tts
        self._llm = llm
        self.events = EventHub()
        self.listener = Listener(self, self.events, cfg.conversation, asr) if asr is not None else None
        p = cfg.persona
        knowledge = Knowledge.load(Path(p.knowledge) if p.knowledge else None, Path(p.answers) if p.answers else None)
        self.persona = Persona(p.name, p.system_prompt, p.style, p.max_answer_words, knowledge)
        self.memory = Memory(p.memory_tokens)
        self.lines = PrerenderedLines()
        self.program: Program | None = None
        self.runner: TurnRunner | None = None
        self._tasks = TaskSet(f"channel {self.name}", self.name)
        self._turn_ids = itertools.count(1)
        self._turn_lock = asyncio.Lock()
        self.turns: dict[str, TurnHandle] = {}
        """Turns not finished yet: waiting, producing or still on air."""
        self.ttft_observed: Counter[float] = Counter()
        """LLM time to first token of this channel's answers (seconds, to 10 ms) -> how often; for /metrics."""
        self.paused: str | None = None
        """Why the channel is paused (None: it is not)."""

    async def attach(self, program: Program, fps: int) -> None:
        """Speak on `program`: follow what it airs, pre-render the fallback lines, set up the runner."""
        self.program = program
        program.add_listener(self._on_program_event)
        if isinstance(self.tts, ChannelVoice):  # the shared TTS serves first the channel that runs dry first
            self.tts.deadline = speech_deadline(program)
        conv = self.cfg.conversation
        persona = self.cfg.persona
        self.persona.configure(persona.aliases)
        await self.lines.prepare(
            self.tts,
            fps,
            {
                "canned": conv.canned_answer,
                "filler": conv.filler_line,
                "didnt_hear": conv.didnt_hear_line,
                "unknown": conv.unknown_answer,
            },
        )
        self.runner = TurnRunner(
            name=self.name,
            tts=self.tts,
            llm=None,
            persona=self.persona,
            memory=self.memory,
            lines=self.lines,
            enqueue=program.enqueue,
            fps=fps,
            first_token_timeout_s=conv.first_token_timeout_s,
            unknown_text=conv.unknown_answer,
            grounding=persona.grounding,
            selection=persona.selection,
        )

    # ------------------------------------------------------------------ TurnControl
    def start_turn(
        self, kind: str, text: str, *, source: str = "chat", priority: int = 0, user: str = "", held: bool = False
    ) -> TurnHandle:
        """Queue a turn ("answer" a question or "say" a text); it runs when the one before is out.
        `held`: it is produced but airs only once `release_turn` (or never: `withdraw_turn`)."""
        text = text.strip()
        if not text:
            raise ValueError("nothing to say")
        if self.paused is not None:
            raise ChannelPaused(f"channel {self.name} is paused ({self.paused}); resume it first")
        waiting = sum(1 for t in self.turns.values() if not t.started)
        if waiting >= MAX_PENDING_TURNS:
            raise ChannelBusy(f"{waiting} messages are already waiting to be answered; try again shortly")
        turn = TurnHandle(f"{self.name}-{next(self._turn_ids)}", kind, text, source, priority, user)
        if held:
            turn.go.clear()
        turn.mark("created")
        self.turns[turn.turn_id] = turn
        turn.task = self._tasks.spawn(self._run_turn(turn), f"turn {turn.turn_id}")
        return turn

    async def _run_turn(self, turn: TurnHandle) -> None:
        assert self.runner is not None, "attach the conversation to a Program first"
        self.runner.llm = self._llm()
        try:
            async with self._turn_lock:  # one turn produces at a time; its speech queues after the last
                turn.mark("started")
                if turn.go.is_set():
                    self._announce(turn)
                await self.runner.run(turn)
        finally:
            turn.enqueued_all = True
            turn.maybe_finish()
            self._tasks.spawn(self._close_turn(turn), f"close {turn.turn_id}")

    def release_turn(self, turn: TurnHandle) -> None:
        """A held turn may air now (its question is final)."""
        if turn.go.is_set():
            return
        turn.go.set()
        turn.mark("released")
        if turn.started:
            self._announce(turn)

    def withdraw_turn(self, turn: TurnHandle, reason: str) -> None:
        """Drop a held turn that has not aired: its LLM request is aborted, memory keeps nothing."""
        if turn.go.is_set() or turn.finished.is_set():
            return
        turn.withdrawn = True
        turn.interrupt(f"withdrawn: {reason}")
        turn.maybe_finish()
        log.info("channel %s: withdrew %s, prepared for %r (%s)", self.name, turn.turn_id, turn.text, reason)

    def interrupt(self, reason: str) -> list[str]:
        """Stop every turn that is on air or being produced (barge-in, the page's stop button).

        Their LLM requests are aborted, their queued speech dropped, the audio cut at the next
        frame boundary and the face back to idle; turns still waiting for their go stay queued.
        """
        stopped = []
        for turn in list(self.turns.values()):
            if turn.started:
                self.stop_turn(turn, reason)
                stopped.append(turn.turn_id)
        if stopped:
            log.info("channel %s: stopped %s (%s)", self.name, ", ".join(stopped), reason)
        return stopped

    def stop_turn(self, turn: TurnHandle, reason: str) -> None:
        """Stop one turn, waiting or on air: no more of it is made, its audio is cut at the next frame."""
        turn.interrupt(reason)
        if self.program is not None and turn.started:
            self.program.cut(turn.turn_id)
        turn.maybe_finish()

    def pause(self, reason: str) -> None:
        """Go quiet: stop what is being said, take no new turns; the idle picture and outputs go on."""
        self.paused = reason
        self.interrupt(f"paused: {reason}")
        for turn in list(self.turns.values()):  # waiting turns too: nothing airs while paused
            turn.interrupt(f"paused: {reason}")
            turn.maybe_finish()
        log.info("channel %s paused (%s)", self.name, reason)

    def resume(self) -> None:
        if self.paused is not None:
            log.info("channel %s resumed", self.name)
        self.paused = None

    # ------------------------------------------------------------------ what aired
    def _announce(self, turn: TurnHandle) -> None:
        if turn.kind == "answer":
            question = {"type": "question", "turn": turn.turn_id, "text": turn.text}
            self.events.publish({**question, "user": turn.user} if turn.user else question)

    async def _close_turn(self, turn: TurnHandle) -> None:
        await turn.finished.wait()
        self.turns.pop(turn.turn_id, None)
        if turn.withdrawn:
            return
        if "llm_first_token" in turn.stages and turn.started:
            self.ttft_observed[round(turn.stages["llm_first_token"] - turn.stages["started"], 2)] += 1
        if turn.kind == "answer":
            self.memory.add("user", turn.text)
        self.memory.add("assistant", turn.heard_text())
        if self.program is not None and not self.program.speaking and not self.turns:
            self.events.publish({"type": "idle", "turn": turn.turn_id})

    def _on_program_event(self, event: ProgramEvent) -> None:
        turn = self.turns.get(event.turn_id)
        if event.kind is EventKind.SEGMENT_STARTED:
            if turn is not None:
                turn.mark("on_air")
            if event.text:
                caption = {"type": "caption", "turn": event.turn_id, "text": event.text}
                self.events.publish({**caption, "at": round(event.at, 3), "duration": round(event.duration, 3)})
            self.events.publish({"type": "speaking", "turn": event.turn_id})
        elif event.kind is EventKind.WORD:
            self.events.publish({"type": "word", "turn": event.turn_id, "word": event.text, "at": round(event.at, 3)})
        elif event.kind is EventKind.SEGMENT_FINISHED and turn is not None:
            turn.on_segment_finished(event.text, event.played, event.duration, event.interrupted)
            if event.interrupted:
                self.events.publish({"type": "caption_cut", "turn": event.turn_id, "text": turn.heard_text()})

    def stats(self) -> dict[str, Any]:
        return {"turns": len(self.turns), "paused": self.paused}

    async def aclose(self) -> None:
        if self.listener is not None:
            await self.listener.aclose()
        await self._tasks.aclose()
        self.events.close()
