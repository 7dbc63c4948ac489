"""A worker's chat desks: one per channel on air that has a `chat:` section.

The front's one IRC connection (router.py) hands every line meant for one of these channels to
`line()`: PRIVMSG becomes a ChatMessage for the desk, CLEARMSG and CLEARCHAT (Twitch's own
moderation) become retractions. Lines the desks post back go out through `post(irc channel,
text)`, which the process hosting this worker connects to the front's IRC connection; the
`ref` of each line the desks are done with goes back through `settled(ref)`, so the front knows
which lines to hand a restarted worker again (agents/front/chat_ledger.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agents.chat.desk import ChatDesk
from agents.chat.messages import ChatMessage, IRCLine, Retraction
from agents.config import StudioConfig
from agents.worker.channel import Channel

log = logging.getLogger(__name__)


class ChannelDesks:
    def __init__(self, cfg: StudioConfig) -> None:
        self.bot_nick = cfg.irc.nick if cfg.irc is not None else None
        self.desks: dict[str, ChatDesk] = {}
        self.post: Callable[[str, str], None] | None = None
        """(IRC channel, text) -> the IRC connection; None: lines for IRC are dropped (logged)."""
        self.settled: Callable[[str], None] | None = None
        """ref -> the front's ledger of lines not yet done with; None: nobody keeps one (one process)."""

    def desk(self, name: str) -> ChatDesk | None:
        return self.desks.get(name)

    def open(self, channel: Channel) -> ChatDesk | None:
        """Give a channel that is on air its chat desk (None if its config has no chat section)."""
        chat = channel.cfg.chat
        if chat is None or channel.name in self.desks:
            return self.desks.get(channel.name)
        irc_channel = chat.irc_channel
        post = None if irc_channel is None else (lambda text: self._post(irc_channel, text))
        desk = ChatDesk(channel.conversation, chat, bot_nick=self.bot_nick, post=post, settled=self._settled)
        desk.start()
        self.desks[channel.name] = desk
        log.info("chat %s: desk open%s", channel.name, f" on IRC {irc_channel}" if irc_channel else "")
        return desk

    def _settled(self, ref: str) -> None:
        if ref and self.settled is not None:
            self.settled(ref)

    def _post(self, irc_channel: str, text: str) -> None:
        if self.post is None:
            log.warning("chat: no IRC connection to post to %s", irc_channel)
            return
        self.post(irc_channel, text)

    async def close(self, name: str) -> None:
        desk = self.desks.pop(name, None)
        if desk is not None:
            await desk.aclose()
            log.info("chat %s: desk closed", name)

    def line(self, name: str, line: IRCLine, ref: str = "") -> None:
        """An IRC line for channel `name`'s desk (ignored once the channel is gone). A question it
        queues is settled when the desk is done with it; every other line at once."""
        desk = self.desks.get(name)
        if desk is None:
            self._settled(ref)
            return
        msg = None
        if line.command == "CLEARMSG":  # a mod deleted one message
            desk.retract(Retraction(msg_id=line.tags.get("target-msg-id", ""), why="a moderator deleted it"))
        elif line.command == "CLEARCHAT" and len(line.params) >= 2:  # a user timed out or banned
            why = "its sender was timed out" if line.tags.get("ban-duration") else "its sender was banned"
            desk.retract(Retraction(login=line.params[1].lower(), user_id=line.tags.get("target-user-id", ""), why=why))
        elif line.command == "CLEARCHAT":
            desk.retract(Retraction(everything=True, why="a moderator cleared the chat"))
        elif line.nick.lower() != (self.bot_nick or "").lower():  # not our own line echoed
            msg = ChatMessage.from_privmsg(line, desk.cfg.roles, ref)
            if msg is not None:
                desk.receive(msg)  # settles it itself
        if msg is None:
            self._settled(ref)

    def stats(self) -> dict[str, Any]:
        return {name: desk.stats() for name, desk in self.desks.items()}

    async def aclose(self) -> None:
        for name in list(self.desks):
            await self.close(name)
