"""A speech turn: one answer (or line) the avatar speaks, with a handle to stop it.

Every segment the turn puts on the Program carries its turn id, so stopping a turn is exact:
the Program cuts that id's audio at a frame boundary, and what the viewers actually heard is
counted from the Program's own "finished" events (played seconds), not from the plan.
A turn may be held: it is produced (LLM, TTS) but nothing airs until its go, which is how an
answer is prepared while the end of a viewer's speech is still being confirmed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class TurnState(Enum):
    """Where a turn is, from its creation to its end (TurnHandle.state)."""

    QUEUED = "queued"  # waiting for the turn before it to finish producing
    HELD = "held"  # produced, or being produced, but not allowed on air yet (a likely final)
    PRODUCING = "producing"  # its LLM / TTS run; nothing of it has aired yet
    ON_AIR = "on_air"  # viewers are hearing it
    DONE = "done"  # all of it aired
    STOPPED = "stopped"  # interrupted (barge-in, skip, pause, a retraction): the rest never airs
    WITHDRAWN = "withdrawn"  # a held turn dropped before it aired: memory keeps nothing of it


@dataclass(eq=False)
class TurnHandle:
    turn_id: str
    kind: str  # "answer" (the LLM answers `text`) or "say" (speak `text` verbatim)
    text: str
    source: str = "chat"  # "chat", "voice", "system"
    priority: int = 0
    user: str = ""
    """Who asked (a chat display name), shown by the chat ticker overlay; empty for the page and voice."""
    task: asyncio.Task[Any] | None = None
    interrupted: bool = False
    interrupt_reason: str = ""
    spoken: list[str] = field(default_factory=list)
    """Text of every segment put on air, in order (the plan)."""
    heard: list[str] = field(default_factory=list)
    """Text the viewers heard: whole segments, and the part of a cut one that aired."""
    degraded: list[str] = field(default_factory=list)
    """Why the turn fell back to something simpler (timeout, TTS failure ...), for logs and stats."""
    stages: dict[str, float] = field(default_factory=dict)
    """monotonic times of the pipeline stages (llm_first_token, first_clause, ...), for latency."""
    segments_pending: int = 0
    enqueued_all: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=lambda: _set(asyncio.Event()))
    """Set: the turn may air. Cleared for a held turn until it is released (or withdrawn)."""
    withdrawn: bool = False
    """A held turn dropped before it aired (the viewer went on talking): memory keeps nothing of it."""

    @property
    def state(self) -> TurnState:
        if self.withdrawn:
            return TurnState.WITHDRAWN
        if self.interrupted:
            return TurnState.STOPPED
        if self.finished.is_set():
            return TurnState.DONE
        if not self.go.is_set():
            return TurnState.HELD
        if "on_air" in self.stages:
            return TurnState.ON_AIR
        return TurnState.PRODUCING if "started" in self.stages else TurnState.QUEUED

    @property
    def started(self) -> bool:
        """It has begun producing (or airing): a barge-in stops it; a waiting turn stays queued."""
        return "started" in self.stages

    def mark(self, stage: str) -> None:
        self.stages.setdefault(stage, time.monotonic())

    def interrupt(self, reason: str) -> None:
        """Stop the turn: its producing task is cancelled (which aborts its LLM request).

        The channel cuts its audio; this only stops more from being made.
        """
        if self.interrupted or self.finished.is_set():
            return
        self.interrupted, self.interrupt_reason = True, reason
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def heard_text(self) -> str:
        return " ".join(t for t in self.heard if t)

    def on_segment_finished(self, text: str, played: float, duration: float, interrupted: bool) -> None:
        self.segments_pending -= 1
        if not interrupted:
            self.heard.append(text)
        elif duration > 0 and text:
            self.heard.append(_prefix_by_time(text, played / duration))
        self.maybe_finish()

    def maybe_finish(self) -> None:
        if (self.enqueued_all or self.interrupted) and self.segments_pending <= 0:
            self.finished.set()


def _set(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return event


def _prefix_by_time(text: str, fraction: float) -> str:
    """The words of `text` said in the first `fraction` of its audio (by character share)."""
    words = text.split()
    if fraction <= 0 or not words:
        return ""
    total = sum(len(w) + 1 for w in words)
    out, used = [], 0
    for w in words:
        used += len(w) + 1
        if used / total > fraction:
            break
        out.append(w)
    return " ".join(out) + ("…" if len(out) < len(words) else "")
