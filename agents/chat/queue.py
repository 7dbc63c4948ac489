"""The chat question queue and the per-user limit, on an injectable clock.

A live chat asks faster than an avatar can answer, so questions wait here and the desk takes
them one at a time: the highest tier first (broadcaster, mods, cheers, subscribers, viewers),
in order of asking within a tier; at most one started per `interval_s`; a question asked again
(by anyone) within `dedupe_s` is a repeat; one that waited `max_age_s` is stale and dropped;
the queue never holds more than `size`: a newcomer pushes out the lowest tier's oldest, or is
refused if it is lower than everything queued. A broadcast delay holds a question back until
`not_before`, and `drop_delayed` (the mods' !dump) removes what is still held.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agents.chat.messages import ChatMessage
from agents.chat.moderation import Refused

Clock = Callable[[], float]
_NOT_WORDS = re.compile(r"[\W_]+")
MAX_REMEMBERED = 5000
"""Question texts and users remembered for dedupe and limits, at most (a flood must not grow memory)."""


class Repeat(Refused):
    """The question was asked (by anyone) within the dedupe window."""


class QueueFull(Refused):
    """Every queued question is of a higher tier than this one."""


def dedupe_key(text: str) -> str:
    """What makes two questions the same one: their words, in any case and punctuation."""
    return " ".join(_NOT_WORDS.sub(" ", text.casefold()).split())


@dataclass(eq=False)
class Question:
    msg: ChatMessage
    text: str
    asked_at: float
    not_before: float
    seq: int

    @property
    def tier(self) -> int:
        return self.msg.tier


class QuestionQueue:
    def __init__(
        self,
        *,
        size: int,
        interval_s: float,
        dedupe_s: float,
        max_age_s: float,
        clock: Clock = time.monotonic,
        on_drop: Callable[[Question, str, str], None] = lambda q, kind, why: None,
    ) -> None:
        self.size = size
        self.interval_s = interval_s
        self.dedupe_s = dedupe_s
        self.max_age_s = max_age_s
        self.clock = clock
        self.on_drop = on_drop
        """Told of every question that leaves unanswered: (question, "stale"|"overflow"|"dumped"|..., why)."""
        self._items: list[Question] = []
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._seq = 0
        self._last_start: float | None = None
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, msg: ChatMessage, text: str, delay_s: float = 0.0) -> Question:
        """Queue a question; Refused (with the reason) if it is a repeat or the queue is full of better ones."""
        now = self.clock()
        key = dedupe_key(text)
        self._forget_before(now - self.dedupe_s)
        if key in self._seen:
            raise Repeat(f"it repeats a question asked {now - self._seen[key]:.0f} s ago")
        self._drop_stale(now)
        if len(self._items) >= self.size:
            worst = min(self._items, key=lambda q: (q.tier, q.seq))  # the lowest tier's oldest
            if worst.tier > msg.tier:
                raise QueueFull(f"{self.size} questions from higher tiers are already waiting")
            self._items.remove(worst)
            self.on_drop(worst, "overflow", f"pushed out of the full queue ({self.size}) by a newer question")
        self._seen[key] = now
        while len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        self._seq += 1
        question = Question(msg, text, now, now + delay_s, self._seq)
        self._items.append(question)
        self.high_water = max(self.high_water, len(self._items))
        return question

    def pop(self) -> Question | None:
        """The next question to answer now, or None (empty, held by the delay, or paced)."""
        now = self.clock()
        self._drop_stale(now)
        if self._last_start is not None and now < self._last_start + self.interval_s:
            return None
        ready = [q for q in self._items if q.not_before <= now]
        if not ready:
            return None
        best = max(ready, key=lambda q: (q.tier, -q.seq))
        self._items.remove(best)
        self._last_start = now
        return best

    def wait_s(self) -> float | None:
        """Seconds until `pop` may give a question (0: now); None when nothing is queued."""
        if not self._items:
            return None
        now = self.clock()
        paced = 0.0 if self._last_start is None else self._last_start + self.interval_s - now
        held = min(q.not_before for q in self._items) - now
        stale = min(q.asked_at for q in self._items) + self.max_age_s - now
        return max(0.0, min(max(paced, held), stale))

    def drop_delayed(self) -> list[Question]:
        """Remove every question still held by the broadcast delay (the mods' !dump)."""
        now = self.clock()
        return self.drop_where(lambda q: q.not_before > now, "dumped", "dumped from the broadcast delay")

    def drop_where(self, wanted: Callable[[Question], bool], kind: str, why: str) -> list[Question]:
        """Remove every queued question that is `wanted` (each told to on_drop as `kind`, `why`)."""
        gone = [q for q in self._items if wanted(q)]
        for q in gone:
            self._items.remove(q)
            self.on_drop(q, kind, why)
        return gone

    def snapshot(self) -> list[Question]:
        """The queued questions in the order they would be answered."""
        return sorted(self._items, key=lambda q: (-q.tier, q.seq))

    def _drop_stale(self, now: float) -> None:
        for q in [q for q in self._items if q.asked_at + self.max_age_s <= now]:
            self._items.remove(q)
            self.on_drop(q, "stale", f"it waited {now - q.asked_at:.0f} s (at most {self.max_age_s:g} s)")

    def _forget_before(self, t: float) -> None:
        while self._seen and next(iter(self._seen.values())) <= t:
            self._seen.popitem(last=False)


class PerUserLimit:
    """One request per `interval_s` per user; moderators and the broadcaster are not limited."""

    def __init__(self, interval_s: float, clock: Clock = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last: OrderedDict[str, float] = OrderedDict()

    def check(self, key: str) -> float:
        """0 and the request counts, or the seconds this user must still wait (nothing counted)."""
        now = self.clock()
        while self._last and next(iter(self._last.values())) <= now - self.interval_s:
            self._last.popitem(last=False)
        last = self._last.get(key)
        if last is not None:
            return last + self.interval_s - now
        self._last[key] = now
        while len(self._last) > MAX_REMEMBERED:
            self._last.popitem(last=False)
        return 0.0
