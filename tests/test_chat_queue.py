"""The chat question queue and the per-user limit, on a clock the test moves."""

from __future__ import annotations

import pytest

from agents.chat.messages import ChatMessage, Role
from agents.chat.moderation import Refused
from agents.chat.queue import PerUserLimit, Question, QuestionQueue


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def msg(login: str, role: Role = Role.VIEWER, bits: int = 0) -> ChatMessage:
    return ChatMessage(text="", login=login, display_name=login, role=role, bits=bits)


def make_queue(clock: FakeClock, drops: list[tuple[str, str]] | None = None, **kw: float) -> QuestionQueue:
    args = {"size": 10, "interval_s": 0.0, "dedupe_s": 300.0, "max_age_s": 120.0, **kw}
    sink = drops if drops is not None else []
    return QuestionQueue(
        size=int(args["size"]),
        interval_s=args["interval_s"],
        dedupe_s=args["dedupe_s"],
        max_age_s=args["max_age_s"],
        clock=clock,
        on_drop=lambda q, kind, why: sink.append((q.msg.login, kind)),
    )


def logins(questions: list[Question | None]) -> list[str | None]:
    return [q.msg.login if q else None for q in questions]


def test_higher_tiers_first_then_in_order_of_asking() -> None:
    clock = FakeClock()
    q = make_queue(clock)
    q.offer(msg("vic"), "one")
    q.offer(msg("sue", Role.SUBSCRIBER), "two")
    q.offer(msg("ben", bits=50), "three")
    q.offer(msg("vera"), "four")
    q.offer(msg("mo", Role.MODERATOR), "five")
    q.offer(msg("boss", Role.BROADCASTER), "six")
    assert logins(q.snapshot()) == ["boss", "mo", "ben", "sue", "vic", "vera"]
    assert logins([q.pop() for _ in range(7)]) == ["boss", "mo", "ben", "sue", "vic", "vera", None]


def test_pacing_starts_at_most_one_question_per_interval() -> None:
    clock = FakeClock()
    q = make_queue(clock, interval_s=10.0)
    q.offer(msg("a"), "first")
    q.offer(msg("b"), "second")
    assert logins([q.pop()]) == ["a"]
    assert q.pop() is None
    assert q.wait_s() == pytest.approx(10.0)
    clock.t += 9.9
    assert q.pop() is None
    clock.t += 0.1
    assert logins([q.pop()]) == ["b"]
    assert q.wait_s() is None, "nothing queued"


def test_a_repeated_question_is_dropped_until_the_dedupe_window_passes() -> None:
    clock = FakeClock()
    q = make_queue(clock, dedupe_s=60.0)
    q.offer(msg("a"), "What do you sell?")
    clock.t += 30
    with pytest.raises(Refused, match="repeats a question asked 30 s ago"):
        q.offer(msg("b"), "what  do you SELL")
    clock.t += 31
    q.offer(msg("c"), "what do you sell")
    assert logins(q.snapshot()) == ["a", "c"]


def test_stale_questions_are_dropped_with_the_reason() -> None:
    clock = FakeClock()
    drops: list[tuple[str, str]] = []
    q = make_queue(clock, drops, max_age_s=120.0, interval_s=100.0)
    q.offer(msg("old"), "asked early")
    assert logins([q.pop()]) == ["old"]
    q.offer(msg("slow"), "waits too long")
    clock.t += 120
    assert q.pop() is None
    assert drops == [("slow", "stale")] and len(q) == 0


def test_the_queue_is_bounded_and_pushes_out_the_lowest_tiers_oldest() -> None:
    clock = FakeClock()
    drops: list[tuple[str, str]] = []
    q = make_queue(clock, drops, size=3)
    for login in ("v1", "v2", "v3"):
        q.offer(msg(login), f"question of {login}")
    q.offer(msg("v4"), "one more")
    assert drops == [("v1", "overflow")]
    q.offer(msg("m1", Role.MODERATOR), "mod question")
    q.offer(msg("s1", Role.SUBSCRIBER), "sub question")
    assert drops == [("v1", "overflow"), ("v2", "overflow"), ("v3", "overflow")]
    assert logins(q.snapshot()) == ["m1", "s1", "v4"]
    q.offer(msg("m2", Role.MODERATOR), "another mod question")
    q.offer(msg("m3", Role.MODERATOR), "a third mod question")
    with pytest.raises(Refused, match="higher tiers"):
        q.offer(msg("v5"), "too low to get in")
    assert len(q) == 3 and q.high_water == 3


def test_the_broadcast_delay_holds_questions_and_dump_drops_them() -> None:
    clock = FakeClock()
    drops: list[tuple[str, str]] = []
    q = make_queue(clock, drops)
    q.offer(msg("a"), "early one", delay_s=5.0)
    clock.t += 4
    q.offer(msg("b"), "late one", delay_s=5.0)
    assert q.pop() is None
    assert q.wait_s() == pytest.approx(1.0)
    clock.t += 1
    assert logins([q.pop()]) == ["a"]
    assert logins(q.drop_delayed()) == ["b"]
    assert drops == [("b", "dumped")] and len(q) == 0


def test_per_user_limit_counts_each_user_on_their_own() -> None:
    clock = FakeClock()
    limit = PerUserLimit(30.0, clock)
    assert limit.check("alice") == 0
    assert limit.check("bob") == 0
    clock.t += 10
    assert limit.check("alice") == pytest.approx(20.0)
    clock.t += 20
    assert limit.check("alice") == 0
    assert limit.check("bob") == 0
    assert PerUserLimit(0.0, clock).check("x") == 0
