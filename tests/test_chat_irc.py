"""The chat bot on a real IRC server (InspIRCd with IRCv3 message-tags), with real clients in the channel.

A plain IRCd has no Twitch tags, so roles come from the channel's config (`roles`); a client that
tries to claim one with its own IRCv3 tags (`+mod=1`) gets nothing from it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ServerThread, eventually
from tests.irc_servers import AirLog, InspIRCd, IRCTestClient, chat_studio_config
from tests.viewer_client import AiortcViewer


@pytest.fixture(scope="module")
def ircd() -> Iterator[InspIRCd]:
    server = InspIRCd().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(ircd: InspIRCd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    answers = tmp_path_factory.mktemp("chat") / "answers.yaml"
    answers.write_text('- {q: "what do you sell", a: "We sell light running shoes."}\n')
    cfg = chat_studio_config(
        [
            {
                "name": "gamma",
                "video": {"width": 256, "height": 256},
                "persona": {"answers": str(answers)},
                "chat": {
                    "irc_channel": "gamma",
                    "roles": {"alice": "moderator"},
                    "answer_interval_s": 0,
                    "per_user_s": 0,
                    "reply_in_chat": True,
                },
            }
        ],
        irc={"nick": "avatarbot", "host": "127.0.0.1", "port": ircd.port, "tls": False, "caps": ["message-tags"]},
    )
    srv = ServerThread(cfg).start()
    yield srv
    srv.stop()


def loud(rms: list[float], since: int) -> bool:
    return max(rms[since:], default=0.0) > 1000


async def test_commands_from_irc_clients_are_obeyed_by_role_spoken_and_answered_in_chat(
    server: ServerThread, ircd: InspIRCd
) -> None:
    alice, bob = IRCTestClient(ircd.port, "alice"), IRCTestClient(ircd.port, "bob")
    await alice.connect("#gamma")
    await bob.connect("#gamma")

    chat = server.front.chat  # the studio's own: started with it, for the channels with a chat section
    gamma = server.studio.channels["gamma"]
    air = AirLog(gamma)
    viewer = AiortcViewer(server.url, "gamma")
    try:
        # the bot joined with the studio, before or after alice: its JOIN, or the names list alice got
        await alice.wait_for(
            lambda ln: (
                (ln.command == "JOIN" and ln.nick == "avatarbot")
                or (ln.command == "353" and "avatarbot" in ln.params[-1].replace("@", "").split())
            ),
            10,
            "the bot in #gamma",
        )
        assert chat.irc is not None and "message-tags" in chat.irc.acked_caps
        desk = server.studio.desks.desk("gamma")
        await viewer.connect()

        bob.send("PRIVMSG #gamma :!skip", "@+mod=1;+badges=broadcaster/1 PRIVMSG #gamma :!clear")
        await eventually(lambda: desk.dropped.get("denied", 0) == 2, 5, "bob's two mod commands denied")

        start = len(viewer.got.audio_rms)
        seen = len(alice.lines)
        bob.send("PRIVMSG #gamma :!ask what do you sell?")
        await viewer.until(lambda g: loud(g.audio_rms, start), 15, "the answer at the viewer")
        reply = await alice.wait_for(
            lambda ln: ln.command == "PRIVMSG" and ln.nick == "avatarbot", 15, "the answer in chat", since=seen
        )
        assert reply.params == ["#gamma", "@bob We sell light running shoes."]
        assert air.said("here's a question from bob."), "the avatar says whom it answers"
        assert not air.began("bob asks: what do you sell"), "and never reads a viewer's words out verbatim"
        assert air.said("we sell light running shoes")
        await eventually(lambda: gamma.conversation.memory.messages(), 5, "the exchange in memory")

        alice.send("PRIVMSG #gamma :!clear", "PRIVMSG #gamma :!say Thanks for watching, everyone.")
        await eventually(lambda: air.said("thanks for watching"), 15, "alice's !say on air")
        assert desk.commands["clear"] == 1 and desk.commands["say"] == 1
        assert not [m for m in gamma.conversation.memory.messages() if "shoes" in m["content"]], "alice's !clear"
    finally:
        await viewer.close()
        await alice.close()
        await bob.close()
