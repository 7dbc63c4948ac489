"""The `irc:` (studio) and `channels[].chat:` config sections, validated with the rest of the file.

One IRC connection serves the studio, so the server, the bot's nick and its token live at the
top level; what a channel does with its chat (commands, permissions, pacing, filters) lives on
the channel. The token is a SecretRef (env:NAME / file:PATH), checked here and never echoed.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.config.secrets import HOW_TO, SecretRef

Role = Literal["viewer", "subscriber", "moderator", "broadcaster"]
CommandName = Literal["ask", "skip", "pause", "resume", "say", "persona", "clear", "dump"]

DEFAULT_PERMISSIONS: dict[str, Role] = {
    "ask": "viewer",
    "skip": "moderator",
    "pause": "moderator",
    "resume": "moderator",
    "say": "moderator",
    "persona": "moderator",
    "clear": "moderator",
    "dump": "moderator",
}
_NICK = re.compile(r"[A-Za-z_\[\]\\`^{}|][A-Za-z0-9_\-\[\]\\`^{}|]{0,31}")
_LOGIN = re.compile(r"[a-z0-9_][a-z0-9_\-\[\]\\`^{}|]{0,31}")
_IRC_CHANNEL = re.compile(r"#?[A-Za-z0-9_.\-]{1,49}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IRCConfig(_Model):
    """The studio's one IRC connection (Twitch by default)."""

    host: str = "irc.chat.twitch.tv"
    port: int = Field(6697, ge=1, le=65535)
    tls: bool = True
    nick: str
    """The bot account's login (Twitch: lower-case)."""
    token: SecretRef | None = None
    """OAuth token as env:NAME or file:PATH, sent as `PASS oauth:...`; none: anonymous (read-only on Twitch)."""
    caps: list[str] = ["twitch.tv/tags", "twitch.tv/commands"]
    """Capabilities requested; a standard IRCv3 server wants [message-tags]."""
    send_limit: int = Field(20, ge=1, le=1000)
    """Messages the bot may post per `send_window_s` (Twitch: 20 per 30 s, 100 if the bot is a mod)."""
    send_window_s: float = Field(30.0, gt=0, le=600)
    keepalive_s: float = Field(60.0, ge=0.2, le=600)
    """Silence from the server this long: the bot sends PING; as long again: the connection is dead."""
    reconnect_min_s: float = Field(1.0, ge=0.05, le=60)
    reconnect_max_s: float = Field(60.0, ge=0.1, le=3600)
    """Backoff between reconnects doubles from min to max; a session that registered resets it."""

    @field_validator("nick")
    @classmethod
    def _nick(cls, nick: str) -> str:
        if not _NICK.fullmatch(nick):
            raise ValueError("not an IRC nick; fix: the bot account's login, e.g. my_avatar_bot")
        return nick

    @field_validator("token")
    @classmethod
    def _token(cls, token: SecretRef | None) -> SecretRef | None:
        if token is not None:
            try:
                token.reveal()
            except LookupError as exc:
                raise ValueError(f"{exc}; fix: {HOW_TO}") from None
        return token


class ChatPersona(_Model):
    """A character `!persona NAME` switches to; unset fields keep the channel's own persona's."""

    name: str = Field(min_length=1, max_length=64)
    system_prompt: str | None = None
    style: str | None = None
    max_answer_words: int | None = Field(None, ge=5, le=1000)


class ChatConfig(_Model):
    """What one channel does with its chat (IRC and the page's chat box)."""

    irc_channel: str | None = None
    """The IRC/Twitch channel to read (`mystream` or `#mystream`); none: the page's chat box only."""
    prefix: str = Field("!", min_length=1, max_length=3, pattern=r"^\S+$")
    mention: bool = True
    """A line that @mentions the bot is a question, as `!ask` is."""
    permissions: dict[CommandName, Role] = {}
    """Least role per command, over the defaults (ask: viewer; every other: moderator)."""
    roles: dict[str, Role] = {}
    """Roles given to logins on top of the server's tags (a plain IRC server has no tags)."""
    page_role: Role = "viewer"
    """The role of whoever types in the page's chat box (the page has no login)."""
    answer_interval_s: float = Field(10.0, ge=0, le=3600)
    """Pacing: at most one chat question is started per this many seconds."""
    per_user_s: float = Field(30.0, ge=0, le=3600)
    """A viewer gets one request (question or command) per this many seconds; mods are not limited."""
    dedupe_s: float = Field(300.0, ge=0, le=86400)
    """The same question again within this time (from anyone) is dropped as a repeat."""
    max_question_age_s: float = Field(120.0, gt=0, le=86400)
    """A question still queued this long after it was asked is dropped as stale."""
    queue_size: int = Field(20, ge=1, le=1000)
    announce: str = Field("Here's a question from {name}.", max_length=200)
    """Said before each answer, so viewers hear whom the avatar answers ({name}). It never speaks a
    viewer's words verbatim unless `read_questions` is on: then {question} may appear, and is read
    after the moderation filter (a blocklisted question is not read at all)."""
    read_questions: bool = False
    blocklist: list[str] = []
    """Words and phrases: a chat line holding one is refused; in what the avatar says they are replaced."""
    output_filter: Literal["replace", "skip"] = "replace"
    """What happens to a blocklisted word in the avatar's text: replaced, or its whole clause skipped."""
    replacement: str = Field("beep", max_length=40)
    allow_links: bool = False
    broadcast_delay_s: float = Field(0.0, ge=0, le=600)
    """Questions and !say texts wait this long before they can air; a mod's !dump drops them."""
    reply_in_chat: bool = False
    """Post the text of each answer to the IRC channel once it has been said."""
    personas: dict[str, ChatPersona] = {}
    """Characters for `!persona NAME`; `!persona default` goes back to the channel's own."""

    @field_validator("irc_channel")
    @classmethod
    def _irc_channel(cls, name: str | None) -> str | None:
        if name is None:
            return None
        if not _IRC_CHANNEL.fullmatch(name):
            raise ValueError("not an IRC channel name; fix: the Twitch channel's login, e.g. mystream")
        return "#" + name.lstrip("#").lower()

    @field_validator("roles")
    @classmethod
    def _roles(cls, roles: dict[str, Role]) -> dict[str, Role]:
        for login in roles:
            if not _LOGIN.fullmatch(login):
                raise ValueError(f"{login!r} is not a login; fix: write chat logins in lower case")
        return roles

    @field_validator("personas")
    @classmethod
    def _personas(cls, personas: dict[str, ChatPersona]) -> dict[str, ChatPersona]:
        for key in personas:
            if key == "default" or not re.fullmatch(r"[a-z0-9_-]{1,32}", key):
                raise ValueError(f"{key!r} cannot name a persona; fix: 1-32 of a-z 0-9 - _, not 'default'")
        return personas

    @field_validator("announce")
    @classmethod
    def _announce(cls, text: str) -> str:
        try:
            text.format(name="n", question="q")
        except (KeyError, IndexError, ValueError):
            raise ValueError("only {name} and {question} may appear in braces; fix: e.g. 'Answering {name}.'") from None
        if "{name}" not in text:
            raise ValueError("the avatar must say whom it answers; fix: put {name} in it")
        return text

    @model_validator(mode="after")
    def _reads_questions_only_when_asked(self) -> ChatConfig:
        if "{question}" in self.announce and not self.read_questions:
            raise ValueError(
                "announce would speak viewers' words verbatim on air; fix: drop {question}, or set read_questions: true"
            )
        return self

    @field_validator("blocklist")
    @classmethod
    def _blocklist(cls, words: list[str]) -> list[str]:
        if any(not w.strip() for w in words):
            raise ValueError("an empty entry would block everything; fix: remove it")
        return words

    def permission(self, command: str) -> Role:
        return self.permissions.get(command, DEFAULT_PERMISSIONS[command])  # type: ignore[arg-type]


def check_irc_channels(channels: list[Any], data: dict[str, Any]) -> None:
    """Cross-checks of channels[].chat against `irc:` (raises ValueError naming the key)."""
    seen: dict[str, str] = {}
    for i, ch in enumerate(channels):
        name = ch.chat.irc_channel if ch.chat is not None else None
        if name is None:
            continue
        if "irc" in data and data["irc"] is None:
            raise ValueError(
                f"channels[{i}].chat.irc_channel is {name!r} but there is no irc: section; "
                "fix: add irc: {nick: BOT_LOGIN, token: env:TWITCH_OAUTH}"
            )
        if name in seen:
            raise ValueError(
                f"channels[{i}].chat.irc_channel {name!r} is also channel {seen[name]!r}'s; "
                "fix: give every channel its own IRC channel"
            )
        seen[name] = ch.name
