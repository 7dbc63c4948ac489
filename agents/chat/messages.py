"""IRC lines (with IRCv3 message tags) and the typed chat messages made from them.

Roles come only from the server's own tags (badges, mod, subscriber) and the config's `roles`:
client tags (`+`-prefixed, relayed by any IRCv3 server from whoever sent them) are never trusted.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_COMMAND = re.compile(r"[A-Za-z]+|\d{3}")
_TAG_ESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
MAX_PARAMS = 15


class MalformedLine(ValueError):
    """The line is not IRC; the reader drops it (with a log line) and keeps the connection."""


@dataclass(frozen=True, slots=True)
class IRCLine:
    command: str
    params: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    prefix: str = ""

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]

    @classmethod
    def parse(cls, text: str) -> IRCLine:
        tags: dict[str, str] = {}
        rest = text
        if rest.startswith("@"):
            raw, _, rest = rest[1:].partition(" ")
            if not raw or not rest:
                raise MalformedLine("tags without a command")
            for item in raw.split(";"):
                key, _, value = item.partition("=")
                if key:
                    tags[key] = _unescape(value)
        rest = rest.lstrip(" ")
        prefix = ""
        if rest.startswith(":"):
            prefix, _, rest = rest[1:].partition(" ")
            if not prefix:
                raise MalformedLine("an empty prefix")
        head, sep, trailing = rest.partition(" :")
        words = head.split()
        if not words or not _COMMAND.fullmatch(words[0]):
            raise MalformedLine(f"no valid command in {rest[:40]!r}")
        params = [*words[1:], trailing] if sep else words[1:]
        if len(params) > MAX_PARAMS:
            raise MalformedLine(f"{len(params)} parameters (at most {MAX_PARAMS})")
        return cls(words[0].upper(), tuple(params), tags, prefix)


def _unescape(value: str) -> str:
    out, chars = [], iter(value)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            out.append(_TAG_ESCAPES.get(nxt, nxt))
        else:
            out.append(c)
    return "".join(out)


def format_line(command: str, *params: str) -> str:
    """One outgoing line; the last parameter is sent as trailing (it may hold spaces)."""
    for p in params:
        if any(c in p for c in "\r\n\x00"):
            raise ValueError("an IRC parameter cannot hold CR, LF or NUL")
    if not params:
        return command
    return " ".join([command, *params[:-1], ":" + params[-1]])


class Role(enum.IntEnum):
    VIEWER = 0
    SUBSCRIBER = 1
    MODERATOR = 2
    BROADCASTER = 3

    @classmethod
    def named(cls, name: str) -> Role:
        return cls[name.upper()]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    text: str
    login: str
    """Lower-case login: the key for per-user limits and config roles."""
    display_name: str
    role: Role = Role.VIEWER
    bits: int = 0
    msg_id: str = ""
    source: str = "chat"  # "chat" (IRC) or "page"
    user_id: str = ""
    """Twitch's stable account id (a login can be renamed); empty where the server has none."""
    ref: str = ""
    """The front's name for the IRC line this came in (agents/front/chat_ledger.py): the desk says
    when it is done with it, so a worker that dies leaves nothing asked unanswered; "" for the page."""

    @property
    def user_key(self) -> str:
        """Whom per-user limits count: the account id where there is one, else the login."""
        return f"id:{self.user_id}" if self.user_id else self.login

    @property
    def tier(self) -> int:
        """Queue priority, higher first: broadcaster 4, mods 3, a cheer (bits) 2, subscribers 1."""
        if self.role >= Role.MODERATOR:
            return int(self.role) + 1
        if self.bits > 0:
            return 2
        return int(self.role)

    @classmethod
    def from_privmsg(cls, line: IRCLine, roles: Mapping[str, str], ref: str = "") -> ChatMessage | None:
        """The chat message of a PRIVMSG (None for CTCP other than /me)."""
        text = line.params[-1] if len(line.params) >= 2 else ""
        if text.startswith("\x01"):
            if not text.startswith("\x01ACTION "):
                return None
            text = text[len("\x01ACTION ") :].rstrip("\x01")
        login = line.nick.lower()
        display = line.tags.get("display-name", "").strip() or line.nick
        role = _tag_role(line.tags)
        if login in roles:
            role = max(role, Role.named(roles[login]))
        bits = line.tags.get("bits", "0")
        return cls(
            text=text,
            login=login,
            display_name=_safe_name(display) or login,
            role=role,
            bits=int(bits) if bits.isdigit() and len(bits) < 9 else 0,
            msg_id=line.tags.get("id", ""),
            user_id=line.tags.get("user-id", "")[:32],
            ref=ref,
        )


@dataclass(frozen=True, slots=True)
class Retraction:
    """Moderation taking chat back (Twitch's CLEARMSG and CLEARCHAT): one message by its id, every
    message of one user (timeout, ban), or `everything` (the chat cleared: viewers' messages; the
    moderators' own lines stay). The page's box is not Twitch chat and is never covered."""

    why: str
    msg_id: str = ""
    login: str = ""
    user_id: str = ""
    everything: bool = False

    def covers(self, msg: ChatMessage) -> bool:
        if msg.source != "chat":
            return False
        if self.everything:
            return msg.role < Role.MODERATOR
        if self.msg_id:
            return msg.msg_id == self.msg_id
        if self.user_id and msg.user_id:
            return msg.user_id == self.user_id
        return bool(self.login) and msg.login == self.login


def _tag_role(tags: Mapping[str, str]) -> Role:
    badges = {b.partition("/")[0] for b in tags.get("badges", "").split(",") if b}
    if "broadcaster" in badges:
        return Role.BROADCASTER
    if tags.get("mod") == "1" or "moderator" in badges:
        return Role.MODERATOR
    if tags.get("subscriber") == "1" or badges & {"subscriber", "founder"}:
        return Role.SUBSCRIBER
    return Role.VIEWER


def _safe_name(name: str) -> str:
    """A display name fit to be spoken and quoted: word characters only, at most 25."""
    return "".join(c for c in name if c.isalnum() or c in "_-")[:25]
