"""IRC servers for the chat tests, over real TCP on 127.0.0.1.

InspIRCd: the real IRCd (Debian package `inspircd`), with IRCv3 message-tags, started per module
from a temp config. TwitchServer: a scripted server that speaks Twitch's dialect (CAP ACK,
001 on NICK, tagged PRIVMSG with badges, mod, subscriber, bits, display-name, user-id), because a
real IRCd cannot inject server tags; it can also PING, go silent and drop the connection.
IRCTestClient: a raw IRC client for a person in the channel (sends commands, reads the bot).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agents.config import StudioConfig, parse_config
from stream.frames import EventKind, ProgramEvent
from tests.conftest import free_port

INSPIRCD_CONF = """
<server name="irc.test.local" description="test ircd" network="TestNet">
<admin name="test" nick="test" email="test@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect allow="*" timeout="60" threshold="100" pingfreq="120" hardsendq="1048576" softsendq="65536"
         recvq="65536" localmax="50" globalmax="50" fakelag="no" commandrate="1000000" resolvehostnames="no">
<dns server="127.0.0.1" timeout="1">
<pid file="{workdir}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{workdir}/inspircd.log">
<options allowzerolimit="no">
<security runasuser="nobody" runasgroup="nogroup">
<performance nouserdns="yes">
<module name="cap">
<module name="ircv3">
<module name="ircv3_ctctags">
<module name="ircv3_msgid">
<module name="ircv3_servertime">
"""


def chat_studio_config(channels: list[dict[str, Any]], irc: dict[str, Any]) -> StudioConfig:
    """tests.conftest.studio_config's defaults plus an `irc:` section (validated together).

    Admission control is relaxed: these tests are about chat, on a box shared with other work."""
    return parse_config(
        {
            "server": {"host": "127.0.0.1", "port": free_port()},
            "admission": {"max_loop_lag_ms": 5000.0, "max_utilisation": 1.0},
            "lipsync": {"device": "cpu"},
            "llm": {"backend": "none"},
            "irc": irc,
            "channels": [{"conversation": {"chat": "say"}, **ch} for ch in channels],
        },
        "test config",
    )


def wait_for_port(port: int, limit_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}") from None
            assert time.monotonic() < deadline, f"nothing listens on 127.0.0.1:{port} after {limit_s} s"
            time.sleep(0.05)  # polling for a port, with a deadline (a process's start has no event to wait on)


class InspIRCd:
    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="avatarcast-ircd-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> InspIRCd:
        binary = shutil.which("inspircd") or "/usr/sbin/inspircd"
        if not os.path.exists(binary):
            pytest.fail("inspircd is not installed (make test installs it as root: apt-get install inspircd)")
        os.chmod(self.workdir, 0o777)  # it drops to nobody, who writes its pid and log here
        conf = self.workdir / "inspircd.conf"
        conf.write_text(INSPIRCD_CONF.format(port=self.port, workdir=self.workdir))
        args = [binary, "--config", str(conf), "--nofork"]
        if os.geteuid() == 0:
            args.append("--runasroot")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, 15, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


class AirLog:
    """What a channel's Program actually put on air (its own events), per segment text."""

    def __init__(self, channel: Any) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        channel.program.add_listener(self._on_event)

    def _on_event(self, event: ProgramEvent) -> None:
        if event.kind is EventKind.SEGMENT_STARTED:
            self.started.append(event.text)
        elif event.kind is EventKind.SEGMENT_FINISHED and not event.interrupted:
            self.finished.append(event.text)

    def said(self, fragment: str) -> bool:
        """Whether a segment holding `fragment` was heard to its end."""
        return any(fragment.lower() in t.lower() for t in self.finished)

    def began(self, fragment: str) -> bool:
        return any(fragment.lower() in t.lower() for t in self.started)


# ---------------------------------------------------------------------- line helpers
@dataclass
class Line:
    command: str
    params: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    prefix: str = ""

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]


def parse(text: str) -> Line:
    """A small IRC parser of the test side's own (not the bot's)."""
    tags: dict[str, str] = {}
    if text.startswith("@"):
        raw, text = text[1:].split(" ", 1)
        tags = dict(kv.partition("=")[::2] for kv in raw.split(";"))
    prefix = ""
    if text.startswith(":"):
        prefix, text = text[1:].split(" ", 1)
    head, sep, trailing = text.partition(" :")
    words = head.split()
    return Line(words[0].upper(), words[1:] + ([trailing] if sep else []), tags, prefix)


ROLE_TAGS: dict[str, dict[str, str]] = {
    "broadcaster": {"badges": "broadcaster/1,subscriber/12", "mod": "0", "subscriber": "1"},
    "moderator": {"badges": "moderator/1", "mod": "1", "subscriber": "0"},
    "subscriber": {"badges": "subscriber/6", "mod": "0", "subscriber": "1"},
    "viewer": {"badges": "", "mod": "0", "subscriber": "0"},
}


def twitch_privmsg(
    channel: str, login: str, text: str, role: str = "viewer", bits: int = 0, msg_id: str | None = None
) -> str:
    """A PRIVMSG as Twitch relays it: the server's own tags say who the sender is."""
    tags = {
        **ROLE_TAGS[role],
        "color": "#1E90FF",
        "display-name": login.capitalize(),
        "id": msg_id or str(uuid.uuid4()),
        "room-id": "1000",
        "user-id": twitch_user_id(login),
        "tmi-sent-ts": str(int(time.time() * 1000)),
        "turbo": "0",
        "user-type": "mod" if role == "moderator" else "",
    }
    if bits:
        tags["bits"] = str(bits)
    raw = ";".join(f"{k}={v}" for k, v in tags.items())
    return f"@{raw} :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG {channel} :{text}"


def twitch_user_id(login: str) -> str:
    return str(zlib.crc32(login.encode()))


# ---------------------------------------------------------------------- scripted Twitch server
class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.lines: list[Line] = []
        self.registered = False
        self.joined: set[str] = set()
        self.closed = False

    def received(self, command: str) -> list[Line]:
        return [ln for ln in self.lines if ln.command == command]


class TwitchServer:
    """Runs on its own event loop in a thread, so it is as separate from the bot as a real server."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sessions: list[Session] = []
        self.raw_lines: list[str] = []
        self.answer_pings = True
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="twitch-server", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> TwitchServer:
        self.thread.start()

        async def up() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        return self

    def stop(self) -> None:
        async def down() -> None:
            for s in self.sessions:
                s.writer.close()
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def current(self) -> Session:
        return self.sessions[-1]

    def registrations(self) -> int:
        return sum(s.registered for s in self.sessions)

    def posts(self, channel: str) -> list[str]:
        """What the bot posted to `channel`, over every session."""
        return [ln.params[-1] for s in self.sessions for ln in s.received("PRIVMSG") if ln.params[0] == channel]

    # ------------------------------------------------------------------ acting
    def send(self, *lines: str | bytes) -> None:
        """Lines to the bot on the current session (str: CR LF added; bytes: written as they are)."""
        data = b"".join(x if isinstance(x, bytes) else x.encode() + b"\r\n" for x in lines)
        session = self.current
        self.loop.call_soon_threadsafe(session.writer.write, data)

    def chat(
        self, channel: str, login: str, text: str, role: str = "viewer", bits: int = 0, msg_id: str | None = None
    ) -> None:
        self.send(twitch_privmsg(channel, login, text, role, bits, msg_id))

    def drop(self) -> None:
        """The server ends the current connection (Twitch restarts its edge servers now and then)."""
        session = self.current
        self.loop.call_soon_threadsafe(session.writer.close)

    # ------------------------------------------------------------------ serving
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(reader, writer)
        self.sessions.append(session)
        try:
            while raw := await reader.readline():
                text = raw.decode().rstrip("\r\n")
                self.raw_lines.append(text)
                line = parse(text)
                session.lines.append(line)
                self._reply(session, line)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            session.closed = True
            writer.close()

    def _reply(self, session: Session, line: Line) -> None:
        out: list[str] = []
        host = ":tmi.twitch.tv"
        if line.command == "CAP" and line.params[:1] == ["REQ"]:
            out.append(f"{host} CAP * ACK :{line.params[-1]}")
        elif line.command == "NICK":
            nick = line.params[0]
            session.registered = True
            out += [f"{host} 001 {nick} :Welcome, GLHF!", f"{host} 376 {nick} :>"]
        elif line.command == "JOIN":
            nick = session.received("NICK")[-1].params[0]
            for channel in line.params[0].split(","):
                session.joined.add(channel)
                out.append(f":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN {channel}")
        elif line.command == "PART":
            session.joined -= set(line.params[0].split(","))
        elif line.command == "PING" and self.answer_pings:
            out.append(f"{host} PONG tmi.twitch.tv :{line.params[-1]}")
        for text in out:
            session.writer.write(text.encode() + b"\r\n")


# ---------------------------------------------------------------------- a person in the channel
class IRCTestClient:
    """A raw IRCv3 client on the test's loop: registers, joins, sends, and waits for lines."""

    def __init__(self, port: int, nick: str) -> None:
        self.port, self.nick = port, nick
        self.lines: list[Line] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def connect(self, channel: str) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._task = asyncio.create_task(self._read())
        self.send("CAP REQ :message-tags", f"NICK {self.nick}", f"USER {self.nick} 0 * :{self.nick}")
        await self.wait_for(lambda ln: ln.command == "CAP", 10, "CAP ACK")
        self.send("CAP END")
        await self.wait_for(lambda ln: ln.command == "001", 10, "registration")
        self.send(f"JOIN {channel}")
        await self.wait_for(lambda ln: ln.command == "366", 10, f"joining {channel}")

    def send(self, *lines: str) -> None:
        self.writer.write(b"".join(x.encode() + b"\r\n" for x in lines))

    async def _read(self) -> None:
        while raw := await self.reader.readline():
            line = parse(raw.decode(errors="replace").rstrip("\r\n"))
            if line.command == "PING":
                self.send("PONG :" + line.params[-1])
            self.lines.append(line)
            self._changed.set()

    async def wait_for(self, match: Callable[[Line], bool], limit_s: float, what: str, since: int = 0) -> Line:
        """The first line from index `since` on that matches (waiting for it to arrive)."""
        deadline = time.monotonic() + limit_s
        seen = since
        while True:
            for line in self.lines[seen:]:
                if match(line):
                    return line
            seen = len(self.lines)
            left = deadline - time.monotonic()
            assert left > 0, f"{self.nick}: timed out after {limit_s} s waiting for {what}"
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def close(self) -> None:
        self.send("QUIT :bye")
        self.writer.close()
        if self._task is not None:
            self._task.cancel()
