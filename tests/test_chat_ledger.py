"""The front's ledger of chat lines a worker process has not finished with (agents/front/chat_ledger.py)."""

from __future__ import annotations

import pytest

from agents.chat.messages import IRCLine
from agents.front import chat_ledger
from agents.front.chat_ledger import ChatLedger


def line(text: str) -> IRCLine:
    return IRCLine.parse(f":viewer!viewer@host PRIVMSG #chan :{text}")


def test_unsettled_lines_are_handed_back_in_order_with_their_refs() -> None:
    ledger = ChatLedger(1)
    refs = [ledger.record("a", line("one")), ledger.record("b", line("two")), ledger.record("a", line("three"))]
    assert len(set(refs)) == 3 and all(r.startswith("1.") for r in refs)
    ledger.settle(refs[1])
    ledger.settle("1.999")  # a ref settled twice, or never given, is no error
    again = ledger.replay(["a", "b"])
    assert [(ref, ch, ln.params[-1]) for ref, ch, ln in again] == [(refs[0], "a", "one"), (refs[2], "a", "three")]
    assert len(ledger) == 2, "replayed lines stay until the restarted worker settles them"
    assert ledger.replayed == 2


def test_lines_of_channels_the_worker_no_longer_runs_are_let_go() -> None:
    ledger = ChatLedger(0)
    ledger.record("a", line("kept"))
    ledger.record("gone", line("dropped"))
    assert [ch for _, ch, _ in ledger.replay(["a"])] == ["a"]
    assert len(ledger) == 1


def test_the_ledger_is_bounded_and_says_what_it_lets_go(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(chat_ledger, "MAX_UNSETTLED", 3)
    ledger = ChatLedger(0)
    first = ledger.record("a", line("oldest"))
    for n in range(3):
        ledger.record("a", line(f"newer {n}"))
    assert len(ledger) == 3
    assert first not in {ref for ref, _, _ in ledger.replay(["a"])}
    assert f"chat line {first} for a let go unsettled" in caplog.text
