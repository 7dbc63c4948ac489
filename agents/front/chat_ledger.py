"""The chat lines a worker process was handed and has not yet said it is done with.

A worker's chat desks hold questions in a queue until they air (agents/chat/desk.py). If the
process dies (a crash, kill -9), that queue dies with it; lines sent while it restarts have
nowhere to go. So the front names every IRC line it hands a worker (`ref`), keeps it here until
the worker reports it settled (aired, handled, or dropped with a reason), and hands the rest to
the restarted worker in their order: a question asked just before or during a restart is
answered, late, instead of silently lost. A question already on air when the worker died is
answered again from the start.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

from agents.chat.messages import IRCLine

log = logging.getLogger(__name__)

MAX_UNSETTLED = 512
"""Lines kept for one worker at most (its desks queue far fewer); beyond it the oldest is let go, logged."""


class ChatLedger:
    def __init__(self, worker: int) -> None:
        self.worker = worker
        self._refs = (f"{worker}.{n}" for n in itertools.count(1))
        self._open: dict[str, tuple[str, IRCLine]] = {}
        """ref -> (channel, line), oldest first."""

    def __len__(self) -> int:
        return len(self._open)

    def record(self, channel: str, line: IRCLine) -> str:
        """Keep `line` for `channel` until it is settled; returns its ref."""
        if len(self._open) >= MAX_UNSETTLED:
            ref, (lost_for, _) = next(iter(self._open.items()))
            del self._open[ref]
            log.warning("worker %d: chat line %s for %s let go unsettled", self.worker, ref, lost_for)
        ref = next(self._refs)
        self._open[ref] = (channel, line)
        return ref

    def settle(self, ref: str) -> None:
        self._open.pop(ref, None)

    def replay(self, channels: Iterable[str]) -> list[tuple[str, str, IRCLine]]:
        """The unsettled lines of `channels` (ref, channel, line), oldest first, for a restarted worker;
        lines of channels it no longer runs are let go."""
        wanted = set(channels)
        gone = [ref for ref, (channel, _) in self._open.items() if channel not in wanted]
        for ref in gone:
            del self._open[ref]
        return [(ref, channel, line) for ref, (channel, line) in self._open.items()]
