"""The chat bot against a scripted Twitch-style server (real IRC over TCP, with Twitch's server tags).

A real IRCd cannot inject Twitch's tags (badges, mod, subscriber, bits), so this server sends them,
as Twitch does: priorities and permissions must follow them. It also PINGs, drops the connection,
goes silent, and sends lines no IRC server should (oversized, binary, malformed).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import pytest

from agents.chat.router import ChatRouter
from agents.config.chat import IRCConfig
from tests.conftest import ServerThread, assert_frames_in_time, eventually
from tests.irc_servers import AirLog, TwitchServer, chat_studio_config, twitch_privmsg, twitch_user_id
from tests.viewer_client import AiortcViewer

TOKEN_ENV = "AVATARCAST_TEST_TWITCH_TOKEN"
TOKEN = "s3cr3t-oauth-value-4f9a"
SMALL = {"width": 256, "height": 256}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    answers = tmp_path_factory.mktemp("chat") / "answers.yaml"
    answers.write_text(
        '- {q: "what do you sell", a: "We sell light running shoes."}\n'
        '- {q: "when is the next stream", a: "Every Friday at noon."}\n'
    )
    os.environ[TOKEN_ENV] = TOKEN
    chat = {
        "answer_interval_s": 0,
        "per_user_s": 30,
        "queue_size": 8,
        "reply_in_chat": True,
        "personas": {"pirate": {"name": "Captain", "style": "Talk like a pirate."}},
    }
    cfg = chat_studio_config(
        [
            {
                "name": "alpha",
                "video": SMALL,
                "persona": {"answers": str(answers)},
                "chat": {**chat, "irc_channel": "alpha"},
            },
            {
                "name": "beta",
                "video": SMALL,
                "persona": {"answers": str(answers)},
                "chat": {**chat, "irc_channel": "beta"},
            },
        ],
        irc={"nick": "avatarbot", "token": f"env:{TOKEN_ENV}", "port": 1, "tls": False},
    )
    srv = ServerThread(cfg).start()
    yield srv
    srv.stop()
    os.environ.pop(TOKEN_ENV, None)


class Rig:
    """The scripted server, and the front's chat router on the studio's loop connected to it."""

    def __init__(self, server: ServerThread, keepalive_s: float = 60.0) -> None:
        self.server = server
        self.twitch = TwitchServer().start()
        irc = IRCConfig(
            host="127.0.0.1",
            port=self.twitch.port,
            tls=False,
            nick="avatarbot",
            token=f"env:{TOKEN_ENV}",
            keepalive_s=keepalive_s,
            reconnect_min_s=0.05,
            reconnect_max_s=0.4,
        )
        cfg = server.cfg.model_copy(update={"irc": irc})

        async def make() -> ChatRouter:
            # the studio's own chat points at a closed port: replace it with one on this scripted server
            front, studio = server.front, server.studio
            await front.chat.aclose()
            chat = front.chat = ChatRouter(cfg, front.deliver_chat)
            studio.post_chat = chat.post
            studio.desks.bot_nick = irc.nick
            for name in front.where:  # fresh desks: no limits or queues left over from another test
                await studio.desks.close(name)
                studio.desks.open(studio.channels[name])
                await chat.add(front.configs[name])
            return chat

        self.chat = server.call(make())
        self.desks = server.studio.desks
        self.alpha = server.studio.channels["alpha"]
        self.beta = server.studio.channels["beta"]

    async def registered(self, n: int = 1) -> None:
        await eventually(
            lambda: self.twitch.registrations() >= n and self.twitch.current.joined == {"#alpha", "#beta"},
            10,
            f"registration {n} and JOIN of both channels",
        )

    def close(self) -> None:
        async def down() -> None:
            await self.chat.aclose()
            for channel in (self.alpha, self.beta):
                channel.conversation.interrupt("test over")

        self.server.call(down())
        self.twitch.stop()


@pytest.fixture()
def rig(server: ServerThread) -> Iterator[Rig]:
    r = Rig(server)
    yield r
    r.close()


async def test_registers_with_oauth_answers_ping_and_never_logs_the_token(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        r = Rig(server)
        try:
            await r.registered()
            session = r.twitch.current
            assert [ln.params for ln in session.received("PASS")] == [[f"oauth:{TOKEN}"]]
            assert session.received("NICK")[0].params == ["avatarbot"]
            assert session.received("CAP")[0].params == ["REQ", "twitch.tv/tags twitch.tv/commands"]
            r.twitch.send("PING :tmi.twitch.tv")
            await eventually(lambda: any(ln.params == ["tmi.twitch.tv"] for ln in session.received("PONG")), 5, "PONG")
            stats = str(r.chat.stats())
        finally:
            r.close()
    assert "irc: -> PASS ***" in caplog.text, "outgoing lines are logged at debug, the PASS line masked"
    assert TOKEN not in caplog.text
    assert TOKEN not in stats


async def test_reconnects_after_a_drop_and_after_the_server_goes_silent(server: ServerThread) -> None:
    """The IRC drop as one of tests/test_faults.py's faults: a viewer on each channel, every channel
    keeps >= 98 % of its frames in time, the question asked as the line dropped is answered on air."""
    r = Rig(server, keepalive_s=0.5)
    air = AirLog(r.alpha)
    viewers = [AiortcViewer(server.url, name) for name in ("alpha", "beta")]
    try:
        for viewer in viewers:
            await viewer.connect()
        await r.registered(1)
        dropped, before = time.monotonic(), server.frame_counters()
        r.twitch.chat("#alpha", "amy", "!ask what do you sell?")
        r.twitch.drop()
        await r.registered(2)
        reconnected = time.monotonic() - dropped
        assert r.twitch.sessions[0].closed and len(r.twitch.current.received("PASS")) == 1
        await eventually(lambda: air.said("light running shoes"), 20, "amy's question answered on air")
        r.twitch.chat("#alpha", "boss", "!say Back on the air after a reconnect.", role="broadcaster")
        await eventually(lambda: air.said("back on the air"), 15, "the !say sent on the new connection to air")
        after, elapsed = server.frame_counters(), time.monotonic() - dropped
        assert_frames_in_time(before, after, elapsed, ("alpha", "beta"))
        for viewer in viewers:
            assert viewer.got.video_rate(dropped) >= 0.9 * 25
        assert reconnected < 5, f"the bot took {reconnected:.1f} s to come back"
        r.twitch.answer_pings = False  # alive but silent: the bot PINGs, gets nothing, and starts over
        await r.registered(3)
        pings = r.twitch.sessions[1].received("PING")
        assert pings and pings[0].params == ["keepalive"]
        assert r.chat.irc is not None and r.chat.irc.stats["connects"] == 3
    finally:
        r.close()
        for viewer in viewers:
            await viewer.close()


async def test_priorities_follow_the_server_tags(rig: Rig) -> None:
    await rig.registered()
    air = AirLog(rig.alpha)
    send = rig.twitch.chat
    send("#alpha", "boss", "!pause", role="broadcaster")
    await eventually(lambda: rig.desks.desk("alpha").paused, 5, "the pause")
    asked = [
        ("vic", "viewer", 0, "what colour are the shoes"),
        ("sue", "subscriber", 0, "do they come in size ten"),
        ("ben", "viewer", 100, "are they waterproof"),
        ("mo", "moderator", 0, "when is the next stream"),
        ("boss", "broadcaster", 0, "what do you sell"),
    ]
    for login, role, bits, question in asked:
        send("#alpha", login, f"!ask {question}", role=role, bits=bits)
    desk = rig.desks.desk("alpha")
    await eventually(lambda: len(desk.queue) == 5, 5, "five questions queued")
    order = [q.msg.login for q in desk.queue.snapshot()]
    assert order == ["boss", "mo", "ben", "sue", "vic"]
    assert [q.msg.bits for q in desk.queue.snapshot()][2] == 100
    send("#alpha", "mo", "!resume", role="moderator")
    await eventually(lambda: air.said("a question from boss"), 15, "the broadcaster's question first")
    await eventually(lambda: air.said("we sell light running shoes"), 10, "its answer")
    await eventually(lambda: any("running shoes" in p for p in rig.twitch.posts("#alpha")), 10, "the answer in chat")
    assert not air.began("a question from Vic"), "the viewer's question is still waiting"
    assert [p for p in rig.twitch.posts("#alpha") if "running shoes" in p] == ["@Boss We sell light running shoes."]


async def test_permissions_follow_the_server_tags(rig: Rig, server: ServerThread) -> None:
    await rig.registered()
    desk, alpha = rig.desks.desk("alpha"), rig.alpha

    async def remember() -> None:
        alpha.conversation.memory.add("user", "remember this")

    server.call(remember())
    send = rig.twitch.chat
    send("#alpha", "vera", "!clear")
    send("#alpha", "sam", "!persona pirate", role="subscriber")
    await eventually(lambda: desk.dropped.get("denied", 0) == 2, 5, "two denied commands")
    assert alpha.conversation.memory.messages(), "a viewer cannot clear the memory"
    assert alpha.conversation.persona.name == "Nova", "a subscriber cannot switch the persona"
    send("#alpha", "mona", "!clear", role="moderator")
    send("#alpha", "boss", "!persona pirate", role="broadcaster")
    await eventually(lambda: alpha.conversation.persona.name == "Captain", 5, "the broadcaster's !persona")
    assert (
        alpha.conversation.runner.persona is alpha.conversation.persona
        and alpha.conversation.persona.style == "Talk like a pirate."
    )
    assert alpha.conversation.persona.knowledge is desk.base_persona.knowledge, (
        "a new persona keeps the channel's knowledge"
    )
    assert not alpha.conversation.memory.messages(), "the mod's !clear"
    send("#alpha", "walt", "!dance")
    await eventually(lambda: any("Commands:" in p for p in rig.twitch.posts("#alpha")), 5, "a help reply")
    help_reply = next(p for p in rig.twitch.posts("#alpha") if "Commands:" in p)
    assert help_reply.startswith("@Walt unknown command !dance") and "!ask <question>" in help_reply
    assert "!skip" not in help_reply, "a viewer is shown the viewer commands only"
    send("#alpha", "boss", "!persona default", role="broadcaster")
    await eventually(lambda: alpha.conversation.persona.name == "Nova", 5, "back to the channel's own persona")
    assert alpha.conversation.runner.output_filter == desk.moderation.filter_output


async def test_deleted_messages_timeouts_and_a_cleared_chat_take_questions_back_even_on_air(rig: Rig) -> None:
    """Twitch's CLEARMSG (one message deleted) and CLEARCHAT (a user timed out or banned, or the
    whole chat cleared): what they cover never airs, or stops airing, and is not posted back."""
    await rig.registered()
    air = AirLog(rig.alpha)
    desk, send, twitch = rig.desks.desk("alpha"), rig.twitch.chat, rig.twitch
    for irc_channel in ("#alpha", "#beta"):
        send(irc_channel, "boss", "!pause", role="broadcaster")
    await eventually(lambda: desk.paused and rig.desks.desk("beta").paused, 5, "the pauses")
    send("#beta", "amy", "!ask do the shoes fit wide feet")
    send("#alpha", "vic", "!ask is this rude question still here", msg_id="msg-vic-1")
    send("#alpha", "troll", "!ask will my spam be read out")
    send("#alpha", "amy", "!ask do the shoes fit wide feet")
    send("#alpha", "sue", "!ask how long does shipping take", role="subscriber")
    await eventually(lambda: len(desk.queue) == 4, 5, "four questions queued")
    twitch.send("@login=vic;room-id=1000;target-msg-id=msg-vic-1;tmi-sent-ts=1 :tmi.twitch.tv CLEARMSG #alpha :rude")
    timeout = f"@ban-duration=600;room-id=1000;target-user-id={twitch_user_id('troll')}"
    twitch.send(f"{timeout} :tmi.twitch.tv CLEARCHAT #alpha :troll")
    await eventually(lambda: len(desk.queue) == 2, 5, "the deleted and the timed-out question dropped")
    assert sorted(q.msg.login for q in desk.queue.snapshot()) == ["amy", "sue"]
    twitch.send("@room-id=1000 :tmi.twitch.tv CLEARCHAT #alpha")
    await eventually(lambda: len(desk.queue) == 0, 5, "the cleared chat's questions dropped")
    assert desk.dropped["retracted"] == 4
    assert len(rig.desks.desk("beta").queue) == 1, "clearing one channel's chat took another's question"

    send("#alpha", "boss", "!resume", role="broadcaster")
    send("#alpha", "zed", "!ask what do you sell", msg_id="msg-zed-1")
    await eventually(lambda: air.began("a question from zed"), 15, "zed's question on air")
    twitch.send("@login=zed;room-id=1000;target-msg-id=msg-zed-1 :tmi.twitch.tv CLEARMSG #alpha :!ask what do you sell")
    await eventually(
        lambda: desk.dropped["retracted"] == 5 and not rig.alpha.conversation.turns, 10, "zed's turns stopped"
    )
    send("#alpha", "boss", "!say And now for something else.", role="broadcaster")
    await eventually(lambda: air.said("something else"), 15, "the next line to air")
    assert not air.said("a question from zed") and not air.began("running shoes"), "the deleted question aired on"
    assert not [p for p in twitch.posts("#alpha") if "running shoes" in p], "the deleted question's answer was posted"


async def test_a_flood_stays_bounded_keeps_mod_commands_and_spares_the_other_channel(
    rig: Rig, server: ServerThread
) -> None:
    await rig.registered()
    air_beta = AirLog(rig.beta)
    air_alpha = AirLog(rig.alpha)
    desk = rig.desks.desk("alpha")
    frames_before, t0 = rig.beta.program.stats["video_frames"], time.monotonic()
    rig.twitch.chat("#beta", "bea", "!ask when is the next stream")
    lines = []
    for i in range(1000):
        if i % 100 == 50:
            lines.append(("mona", "!clear", "moderator"))
        elif i == 999:
            lines.append(("mona", "!say The flood is over.", "moderator"))
        else:
            lines.append((f"user{i % 120}", f"!ask flood question number {i} about shoes", "viewer"))
    rig.twitch.send(*(twitch_privmsg("#alpha", login, text, role) for login, text, role in lines))
    await eventually(lambda: desk.commands.get("say", 0) == 1, 15, "all 1,000 lines read")
    assert desk.commands["clear"] == 10, "no mod command is lost in the flood"
    assert desk.queue.high_water <= 8 and len(desk.queue) <= 8
    assert desk.dropped["limited"] == 1000 - 11 - 120, desk.dropped  # every viewer's 2nd..9th line
    assert desk.dropped["overflow"] >= 100, desk.dropped
    await eventually(lambda: air_beta.said("every friday at noon"), 15, "the other channel's answer")
    await eventually(lambda: any("Every Friday" in p for p in rig.twitch.posts("#beta")), 5, "its post in #beta")
    frames, elapsed = rig.beta.program.stats["video_frames"] - frames_before, time.monotonic() - t0
    # loose on purpose (the box is shared): a frozen picture would deliver next to nothing
    assert frames >= 0.5 * rig.beta.fmt.fps * elapsed, ("the other channel's picture kept coming", frames, elapsed)
    await eventually(lambda: air_alpha.said("the flood is over"), 20, "the mod's !say after the flood")


async def test_bad_lines_are_dropped_and_the_connection_stays(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.registered()
    air = AirLog(rig.alpha)
    with caplog.at_level(logging.INFO, logger="agents.chat.irc"):
        rig.twitch.send(
            ":x!x@x.tmi.twitch.tv PRIVMSG #alpha :!say " + "A" * 600,  # over 512 bytes
            "@badges=" + "b" * 9000 + " :x!x@x PRIVMSG #alpha :!say tags too big",  # tags over 8191 bytes
            b":x!x@x PRIVMSG #alpha :\xff\xfe\xfa binary\r\n",
            b":x!x@x PRIVMSG #alpha :nul \x00 inside\r\n",
            "@only-tags",
            ":only-a-prefix",
            "12 not a command",
            b"Z" * 20000 + b"\r\n",  # no end for longer than any line may be
        )
        rig.twitch.chat("#alpha", "mona", "!say Still connected.", role="moderator")
        air_ok = lambda: air.said("still connected")  # noqa: E731
        await eventually(air_ok, 15, "a valid command after the bad lines")
    irc = rig.chat.irc
    assert irc is not None and irc.stats["connects"] == 1 and irc.state == "registered"
    assert sum(irc.dropped.values()) == 8, irc.dropped
    assert caplog.text.count("irc: dropped a line from the server") == 8
    assert rig.desks.desk("alpha").commands["say"] == 1


async def test_the_page_chat_box_goes_through_the_same_desk(rig: Rig, server: ServerThread) -> None:
    await rig.registered()
    air = AirLog(rig.alpha)
    desk = rig.desks.desk("alpha")

    async def page(text: str, mode: str = "ask", user: str = "10.0.0.7") -> dict[str, str]:
        return desk.submit_page(text, mode, user)

    assert server.call(page("!skip"))["status"] == "denied", "the page's role is viewer"
    assert server.call(page("Hello", mode="say"))["status"] == "denied", "saying verbatim is for mods"
    refused = server.call(page("buy at cheap.example.com"))
    assert refused == {"status": "refused", "reason": "refused: links are not allowed"}
    assert server.call(page("!dance"))["reply"].startswith("unknown command !dance")
    assert server.call(page("what do you sell", user="10.0.0.8"))["status"] == "queued"
    assert server.call(page("when is the next stream", user="10.0.0.8"))["status"] == "limited"
    await eventually(lambda: air.said("here's a question from a viewer"), 15, "the page's question announced")
    await eventually(lambda: "We sell light running shoes." in rig.twitch.posts("#alpha"), 10, "chat back")


async def test_the_broadcast_delay_holds_lines_back_and_dump_drops_them(server: ServerThread) -> None:
    from agents.chat.desk import ChatDesk
    from agents.config.chat import ChatConfig

    beta = server.studio.channels["beta"]
    air = AirLog(beta)

    async def open_desk(delay_s: float) -> ChatDesk:
        cfg = ChatConfig(page_role="moderator", answer_interval_s=0, broadcast_delay_s=delay_s)
        desk = ChatDesk(beta.conversation, cfg)
        desk.start()
        return desk

    async def page(desk: ChatDesk, text: str) -> dict[str, str]:
        return desk.submit_page(text, "ask")

    held = server.call(open_desk(60.0))
    try:
        assert server.call(page(held, "!say This line must never air."))["status"] == "queued"
        assert server.call(page(held, "what do you sell"))["status"] == "queued"
        assert server.call(page(held, "!dump"))["reply"] == "dumped 2 from the delay"
        assert held.dropped["dumped"] == 2 and len(held.queue) == 0 and not held.says
    finally:
        server.call(held.aclose())
    short = server.call(open_desk(1.0))
    try:
        sent = time.monotonic()
        server.call(page(short, "!say This one airs after the delay."))
        await eventually(lambda: air.began("airs after the delay"), 10, "the delayed line")
        assert time.monotonic() - sent >= 1.0
    finally:
        server.call(short.aclose())
    assert not air.began("must never air")


async def test_channels_join_and_leave_the_one_connection_at_run_time(rig: Rig, server: ServerThread) -> None:
    await rig.registered()

    async def leave() -> None:
        rig.chat.remove("beta")
        await server.studio.desks.close("beta")

    server.call(leave())
    await eventually(lambda: rig.twitch.current.joined == {"#alpha"}, 5, "the PART of #beta")
    assert rig.desks.desk("beta") is None
    rig.twitch.chat("#beta", "boss", "!pause", role="broadcaster")
    rig.twitch.chat("#alpha", "boss", "!pause", role="broadcaster")
    await eventually(lambda: rig.desks.desk("alpha").paused, 5, "alpha's pause")

    async def join() -> None:
        server.studio.desks.open(rig.beta)
        await rig.chat.add(rig.beta.cfg)

    server.call(join())
    await eventually(lambda: rig.twitch.current.joined == {"#alpha", "#beta"}, 5, "#beta joined again")
    assert not rig.desks.desk("beta").paused, "the line sent while #beta was gone reached no desk"
    assert rig.chat.irc is not None and rig.chat.irc.stats["connects"] == 1, "the one connection stayed"
    clash = server.studio.channels["alpha"].cfg.model_copy(update={"name": "other"})
    with pytest.raises(ValueError, match="already channel alpha's"):
        rig.chat.check_channel(clash)
    stats = rig.chat.stats()
    assert stats["irc"]["state"] == "registered" and set(stats["routes"].values()) == {"alpha", "beta"}
