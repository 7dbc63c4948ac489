"""The bytes of an IRC connection: framing, size limits, and the send budget.

Incoming: bytes are split at LF; a line whose message part is over 512 bytes (RFC 1459, CR LF
included) or whose IRCv3 tag part is over 8191 bytes, or that is not UTF-8, or holds NUL, is
refused with the reason, and reading goes on with the next line: one bad line never costs
the connection. Outgoing: servers drop (Twitch: mutes) a bot that posts too fast, so posts
wait for room in a sliding window of `limit` per `window_s`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from agents.chat.messages import IRCLine, MalformedLine

MAX_MESSAGE = 512
"""Bytes of one line without its tags, CR LF included (RFC 1459 / IRCv3)."""
MAX_TAGS = 8191
"""Bytes of the `@tags ` part that IRCv3 message-tags allows on top."""
MAX_BUFFER = MAX_MESSAGE + MAX_TAGS + 1


class LineTooLong(MalformedLine):
    pass


class LineSplitter:
    """Bytes in, complete lines out; a line too long to be IRC is skipped up to its end."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = 0
        """Bytes of an overlong line thrown away so far (0: not inside one)."""

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        out: list[bytes | LineTooLong] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skipping:
                out.append(LineTooLong(f"a line of over {self._skipping + len(line)} bytes"))
                self._skipping = 0
            else:
                out.append(line.rstrip(b"\r"))
        if len(self._buffer) > MAX_BUFFER:  # no end in sight: keep nothing of it
            self._skipping += len(self._buffer)
            self._buffer.clear()
        return out


def decode_line(raw: bytes) -> IRCLine:
    """One received line as an IRCLine; MalformedLine (with the reason) when it is not one."""
    tags, message = b"", raw
    if raw.startswith(b"@"):
        space = raw.find(b" ")
        tags, message = (raw, b"") if space < 0 else (raw[:space], raw[space + 1 :])
    if len(tags) > MAX_TAGS:
        raise LineTooLong(f"tags of {len(tags)} bytes (at most {MAX_TAGS})")
    if len(message) + 2 > MAX_MESSAGE:
        raise LineTooLong(f"a message of {len(message) + 2} bytes (at most {MAX_MESSAGE})")
    if b"\x00" in raw or b"\r" in raw:
        raise MalformedLine("it holds NUL or a bare CR")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedLine("it is not UTF-8 (binary data)") from None
    if not text.strip():
        raise MalformedLine("it is empty")
    return IRCLine.parse(text)


def encode_line(text: str) -> bytes:
    data = text.encode("utf-8") + b"\r\n"
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"an outgoing line of {len(data)} bytes (at most {MAX_MESSAGE})")
    return data


def split_for_privmsg(text: str, room: int) -> list[str]:
    """`text` in pieces of at most `room` UTF-8 bytes, cut between words where there is a space."""
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word.encode()) > room:  # a "word" longer than a line: cut it by characters
            cut = len(word)
            while len(word[:cut].encode()) > room:
                cut -= 1
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:cut])
            word = word[cut:]
        candidate = f"{current} {word}" if current else word
        if len(candidate.encode()) > room:
            pieces.append(current)
            candidate = word
        current = candidate
    if current:
        pieces.append(current)
    return pieces


class SendWindow:
    """At most `limit` sends in any `window_s`: `wait_s()` says how long until the next may go."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._sent: deque[float] = deque()

    def wait_s(self) -> float:
        now = self.clock()
        while self._sent and self._sent[0] <= now - self.window_s:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.window_s - now

    def record(self) -> None:
        self._sent.append(self.clock())
