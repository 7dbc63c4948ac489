"""What a chat line asks for: a command with its argument, a question (!ask or @mention), or nothing.

Only lines meant for the bot are requests; the rest of chat is conversation between viewers and
is left alone (not moderated, not counted, not logged). Permissions are per command, as a least
role, from the channel's config over the defaults (ask: viewer; every other: moderator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.chat.messages import ChatMessage, Role
from agents.config.chat import DEFAULT_PERMISSIONS, ChatConfig

COMMANDS = tuple(DEFAULT_PERMISSIONS)
USAGE = {
    "ask": "ask <question>",
    "skip": "skip",
    "pause": "pause",
    "resume": "resume",
    "say": "say <text>",
    "persona": "persona <name|default>",
    "clear": "clear",
    "dump": "dump",
}
NEEDS_TEXT = frozenset({"ask", "say", "persona"})


@dataclass(frozen=True, slots=True)
class Request:
    command: str
    """One of COMMANDS, or "help" for a command the bot does not know."""
    arg: str = ""
    unknown: str = ""
    """The word after the prefix, when it named no command."""


_CHEERMOTE = re.compile(r"(?<!\S)[A-Za-z]+\d+(?!\S)")
"""A cheer's token (Cheer100, BibleThump50 ...): Twitch writes it into the line, often first."""


def without_cheers(msg: ChatMessage) -> str:
    """The text of a cheering message without its cheermotes, so `cheer100 !ask ...` is a request and
    the question is the viewer's words alone. Only a message with bits has cheermotes."""
    if msg.bits <= 0:
        return msg.text
    return " ".join(_CHEERMOTE.sub(" ", msg.text).split())


def parse_request(text: str, *, prefix: str, mention_nick: str | None) -> Request | None:
    """The request in a chat line, or None when the line is not meant for the bot."""
    text = text.strip()
    if text.startswith(prefix):
        word, _, arg = text[len(prefix) :].partition(" ")
        if not word:
            return None  # a lone "!" or "! hello": punctuation, not a command
        name = word.lower()
        if name in COMMANDS:
            return Request(name, arg.strip())
        return Request("help", arg.strip(), unknown=word[:20])
    if mention_nick:
        mention = re.compile(rf"(?<![\w@])@{re.escape(mention_nick)}(?!\w)[,:]?", re.IGNORECASE)
        if mention.search(text):
            return Request("ask", " ".join(mention.sub(" ", text).split()))
    return None


def allowed(command: str, role: Role, cfg: ChatConfig) -> bool:
    if command == "help":
        return True
    return role >= Role.named(cfg.permission(command))


def help_text(cfg: ChatConfig, role: Role, unknown: str = "") -> str:
    """A short reply that lists what this user may do (mods see their commands too)."""
    usable = [cfg.prefix + USAGE[c] for c in COMMANDS if allowed(c, role, cfg)]
    head = f"unknown command {cfg.prefix}{unknown}. " if unknown else ""
    return head + "Commands: " + ", ".join(usable)
