"""The front's ledger of chat lines a worker process has not finished with (agents/front/chat_ledger.py),
and what a worker's chat desks tell it. The whole round trip, a worker killed with questions in
its queue, is in tests/test_workers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agents.chat.messages import IRCLine
from agents.front import chat_ledger
from agents.front.chat_ledger import ChatLedger
from tests.conftest import ServerThread, eventually
from tests.irc_servers import AirLog, chat_studio_config, twitch_privmsg


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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    answers = tmp_path_factory.mktemp("ledger") / "answers.yaml"
    answers.write_text('- {q: "what do you sell", a: "We sell light running shoes."}\n')
    chat = {"irc_channel": "alpha", "per_user_s": 30, "answer_interval_s": 0}
    channel = {"name": "alpha", "video": {"width": 128, "height": 128}, "persona": {"answers": str(answers)}}
    # the desks are fed directly below: the studio's IRC connection points at a closed port
    cfg = chat_studio_config([{**channel, "chat": chat}], irc={"nick": "avatarbot", "port": 1, "tls": False})
    srv = ServerThread(cfg).start()
    yield srv
    srv.stop()


async def test_the_desks_say_when_they_are_done_with_each_line(server: ServerThread) -> None:
    """A line that needs nothing more is settled at once, a question only once it has aired, a line
    for a channel with no desk at once."""
    desks = server.studio.desks
    air = AirLog(server.studio.channels["alpha"])
    settled: list[str] = []

    async def deliver(channel: str, login: str, text: str, ref: str) -> None:
        desks.settled = settled.append
        desks.line(channel, IRCLine.parse(twitch_privmsg(f"#{channel}", login, text)), ref)

    server.call(deliver("alpha", "ann", "hello everyone", "r1"))  # not for the bot
    server.call(deliver("alpha", "ann", "!ask what do you sell?", "r2"))
    server.call(deliver("alpha", "ann", "!ask when is the next stream?", "r3"))  # too soon: per-user limit
    server.call(deliver("gone", "ann", "!ask anyone there?", "r4"))  # no such desk
    assert settled == ["r1", "r3", "r4"], "the queued question is not done with yet"
    await eventually(lambda: air.said("light running shoes"), 20, "the question answered")
    await eventually(lambda: "r2" in settled, 10, "the answered question settled")
