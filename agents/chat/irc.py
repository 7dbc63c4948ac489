"""The studio's one IRC connection, in Twitch's dialect (any IRCv3 server works as well).

  connect (TLS optional) -> CAP REQ, PASS oauth:..., NICK, USER -> CAP END on ACK/NAK -> 001
  -> JOIN every channel routed here -> PRIVMSG, CLEARMSG and CLEARCHAT lines to `on_chat`, PING answered
A silent server is PINGed after `keepalive_s`, and given up after as long again. A lost
connection is retried with a backoff that doubles from reconnect_min_s to reconnect_max_s and
starts over after a session that registered. Posts go out through the send window (Twitch
mutes a bot that posts too fast); they wait in a bounded queue, the oldest dropped when full.
The token is sent once per connection and never written to a log.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from agents.chat.messages import IRCLine, MalformedLine, format_line
from agents.chat.wire import MAX_MESSAGE, LineSplitter, SendWindow, decode_line, encode_line, split_for_privmsg
from agents.config.chat import IRCConfig

log = logging.getLogger(__name__)

OUTGOING_QUEUE = 64
"""Posts waiting for the send window; beyond this the oldest is dropped (chat has moved on)."""
CONNECT_TIMEOUT_S = 15.0
CHAT_COMMANDS = {"PRIVMSG": 2, "CLEARMSG": 1, "CLEARCHAT": 1}
"""What goes to `on_chat`, with the parameters each needs at least (the channel first)."""
PREFIX_ROOM = 120
"""Bytes kept free in each post for the `:nick!user@host ` prefix the server adds when relaying it."""


class IRCClient:
    def __init__(self, cfg: IRCConfig, on_chat: Callable[[IRCLine], None]) -> None:
        """`on_chat` gets chat lines (PRIVMSG) and Twitch's moderation of them (CLEARMSG: a message
        deleted; CLEARCHAT: a user timed out or banned, or the whole chat cleared)."""
        self.cfg = cfg
        self.on_chat = on_chat
        self.nick = cfg.nick
        self.state = "stopped"
        self.channels: set[str] = set()
        self.stats: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        """Incoming lines dropped, by reason."""
        self.acked_caps: set[str] = set()
        self._window = SendWindow(cfg.send_limit, cfg.send_window_s)
        self._outgoing: deque[tuple[str, str]] = deque()
        self._wake_sender = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._registered = False
        self._task: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ control
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="irc")
            self._sender = asyncio.create_task(self._send_loop(), name="irc-send")

    async def aclose(self) -> None:
        for task in (self._task, self._sender):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._task, self._sender) if t is not None), return_exceptions=True)
        self._task = self._sender = None
        self.state = "stopped"

    def join(self, channel: str) -> None:
        """Read `channel` from now on (joined at once when connected, and again on every reconnect)."""
        if channel not in self.channels:
            self.channels.add(channel)
            if self.state == "registered":
                self._write(format_line("JOIN", channel))

    def part(self, channel: str) -> None:
        if channel in self.channels:
            self.channels.discard(channel)
            if self.state == "registered":
                self._write(format_line("PART", channel))

    def privmsg(self, channel: str, text: str) -> bool:
        """Queue a post to `channel` (split to fit a line); False if `text` holds nothing to post."""
        room = MAX_MESSAGE - len(f"PRIVMSG {channel} :\r\n".encode()) - PREFIX_ROOM
        pieces = split_for_privmsg(" ".join(text.split()), room)
        for piece in pieces:
            if len(self._outgoing) >= OUTGOING_QUEUE:
                old_channel, _ = self._outgoing.popleft()
                self.stats["posts_dropped"] += 1
                log.warning("irc: dropped a post to %s: %d posts wait for the send limit", old_channel, OUTGOING_QUEUE)
            self._outgoing.append((channel, piece))
        self._wake_sender.set()
        return bool(pieces)

    def info(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "server": f"{self.cfg.host}:{self.cfg.port}",
            "channels": sorted(self.channels),
            "caps": sorted(self.acked_caps),
            "posts_waiting": len(self._outgoing),
            **self.stats,
            "dropped_lines": dict(self.dropped),
        }

    # ------------------------------------------------------------------ connection
    async def _run(self) -> None:
        delay = self.cfg.reconnect_min_s
        while True:
            self._registered = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
                why = str(exc) or type(exc).__name__
                log.warning("irc: connection to %s:%d ended: %s", self.cfg.host, self.cfg.port, why)
            finally:
                self._close_writer()
            if self._registered:
                delay = self.cfg.reconnect_min_s
            self.state = "waiting"
            log.info("irc: reconnecting in %.2f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.reconnect_max_s)

    async def _session(self) -> None:
        """One connection, from connect until it ends (always with an exception)."""
        self.state = "connecting"
        self.stats["connects"] += 1
        tls = ssl.create_default_context() if self.cfg.tls else None
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(self.cfg.host, self.cfg.port, ssl=tls)
        self._writer = writer
        self.acked_caps = set()
        if self.cfg.caps:
            self._write(format_line("CAP", "REQ", " ".join(self.cfg.caps)))
        if self.cfg.token is not None:
            token = self.cfg.token.reveal()
            self._write(f"PASS {token if token.startswith('oauth:') else 'oauth:' + token}", secret=True)
        self._write(format_line("NICK", self.nick))
        self._write(format_line("USER", self.nick, "0", "*", self.nick))
        await self._read(reader)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        splitter = LineSplitter()
        pinged = False
        while True:
            try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel of aclose()
                async with asyncio.timeout(self.cfg.keepalive_s):
                    data = await reader.read(4096)
            except TimeoutError:
                if pinged:
                    raise ConnectionError(f"no reply to PING in {self.cfg.keepalive_s:g} s") from None
                self._write(format_line("PING", "keepalive"))
                pinged = True
                continue
            if not data:
                raise ConnectionError("the server closed the connection")
            pinged = False
            for raw in splitter.feed(data):
                try:
                    if isinstance(raw, MalformedLine):
                        raise raw
                    line = decode_line(raw)
                except MalformedLine as exc:
                    self.dropped[type(exc).__name__] += 1
                    log.info("irc: dropped a line from the server: %s", exc)
                    continue
                self.stats["lines"] += 1
                self._handle(line)

    def _handle(self, line: IRCLine) -> None:
        cmd = line.command
        if cmd in CHAT_COMMANDS and len(line.params) >= CHAT_COMMANDS[cmd]:
            try:
                self.on_chat(line)
            except Exception:
                log.exception("irc: a %s line from %s could not be handled", cmd, line.nick)
        elif cmd == "PING":
            self._write(format_line("PONG", *(line.params[-1:] or ["pong"])))
        elif cmd == "CAP" and len(line.params) >= 3 and line.params[1] in ("ACK", "NAK"):
            if line.params[1] == "ACK":
                self.acked_caps |= set(line.params[-1].split())
            else:
                log.warning("irc: the server refused the capabilities %s", line.params[-1])
            self._write("CAP END")
        elif cmd == "001":
            self.state = "registered"
            self._registered = True  # this session counts as a good one: the backoff starts over
            self.stats["registrations"] += 1
            self.nick = line.params[0] if line.params else self.nick
            log.info("irc: registered on %s:%d as %s", self.cfg.host, self.cfg.port, self.nick)
            self._join_all()
            self._wake_sender.set()
        elif cmd == "RECONNECT":  # Twitch: the server is going away, come back
            raise ConnectionError("the server asked for a reconnect")
        elif cmd == "NOTICE" and self.state != "registered":  # Twitch says why a login failed this way
            text = line.params[-1] if line.params else ""
            failed = "auth" in text.lower() or "password" in text.lower()
            log.log(logging.ERROR if failed else logging.INFO, "irc: the server says: %s", text)
        elif cmd in ("432", "433", "464", "465", "ERROR"):
            log.error("irc: %s %s", cmd, " ".join(line.params[1:]))

    def _join_all(self) -> None:
        batch: list[str] = []
        for channel in sorted(self.channels):
            if batch and len(",".join([*batch, channel])) > 400:
                self._write(format_line("JOIN", ",".join(batch)))
                batch = []
            batch.append(channel)
        if batch:
            self._write(format_line("JOIN", ",".join(batch)))

    def _write(self, text: str, *, secret: bool = False) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        self._writer.write(encode_line(text))
        log.debug("irc: -> %s", text.split(" ", 1)[0] + " ***" if secret else text)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.state = "disconnected"

    # ------------------------------------------------------------------ posting
    async def _send_loop(self) -> None:
        while True:
            if not self._outgoing or self.state != "registered":
                self._wake_sender.clear()
                await self._wake_sender.wait()
                continue
            wait = self._window.wait_s()
            if wait > 0:
                await asyncio.sleep(wait)  # the send budget refills with time, nothing else to wait on
                continue
            channel, text = self._outgoing.popleft()
            self._window.record()
            self._write(format_line("PRIVMSG", channel, text))
            self.stats["posts"] += 1
