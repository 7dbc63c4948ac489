"""The studio's chat: one IRC connection, one desk per channel that has a `chat:` section.

The connection routes each PRIVMSG (and each moderation of one: CLEARMSG, CLEARCHAT) by its IRC
channel to that channel's desk, so one bot serves
every channel on air; channels can come and go at run time (the admin API) without touching
the connection of the others. The connection opens when the first channel names an IRC
channel and stays open (reading nothing) if the last one leaves.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.channel import Channel
from agents.chat.config import IRCConfig
from agents.chat.desk import ChatDesk
from agents.chat.irc import IRCClient
from agents.chat.messages import ChatMessage, IRCLine, Retraction
from agents.config import ChannelConfig, StudioConfig

log = logging.getLogger(__name__)


class StudioChat:
    def __init__(self, cfg: StudioConfig, channels: dict[str, Channel]) -> None:
        self.cfg = cfg
        self.irc_cfg: IRCConfig | None = cfg.irc
        self._channels = channels
        self.desks: dict[str, ChatDesk] = {}
        self._by_irc: dict[str, ChatDesk] = {}
        self.irc: IRCClient | None = None

    async def start(self) -> None:
        """A desk for every channel on air that has a chat section; the IRC connection if one is named."""
        for channel in list(self._channels.values()):
            await self.add_channel(channel)

    async def aclose(self) -> None:
        for name in list(self.desks):
            await self.remove_channel(name)
        if self.irc is not None:
            await self.irc.aclose()
            self.irc = None

    def desk(self, name: str) -> ChatDesk | None:
        return self.desks.get(name)

    def check_channel(self, cfg: ChannelConfig) -> None:
        """Raise ValueError (with the fix) if a channel with this config could not get its chat desk.

        The admin API calls this before it builds the channel, so a clash is refused, not half-done."""
        irc_channel = cfg.chat.irc_channel if cfg.chat is not None else None
        if irc_channel is None:
            return
        if self.irc_cfg is None:
            raise ValueError(
                f"chat.irc_channel is {irc_channel!r} but the studio has no irc: section; fix: add one, or drop it"
            )
        owner = self._by_irc.get(irc_channel)
        if owner is not None and owner.name != cfg.name:
            raise ValueError(f"IRC channel {irc_channel} is already channel {owner.name}'s; fix: pick another")

    async def add_channel(self, channel: Channel) -> ChatDesk | None:
        """Give a channel that is on air its chat desk (None if its config has no chat section)."""
        chat = channel.cfg.chat
        if chat is None or channel.name in self.desks:
            return self.desks.get(channel.name)
        self.check_channel(channel.cfg)
        irc_channel = chat.irc_channel
        post = None
        if irc_channel is not None:
            irc = await self._connection()
            post = lambda text: irc.privmsg(irc_channel, text)  # noqa: E731
        desk = ChatDesk(channel, chat, bot_nick=self.irc_cfg.nick if self.irc_cfg else None, post=post)
        desk.start()
        self.desks[channel.name] = desk
        if irc_channel is not None:
            self._by_irc[irc_channel] = desk
            assert self.irc is not None
            self.irc.join(irc_channel)
        log.info("chat %s: desk open%s", channel.name, f" on IRC {irc_channel}" if irc_channel else "")
        return desk

    async def remove_channel(self, name: str) -> None:
        desk = self.desks.pop(name, None)
        if desk is None:
            return
        irc_channel = desk.cfg.irc_channel
        if irc_channel is not None and self._by_irc.get(irc_channel) is desk:
            del self._by_irc[irc_channel]
            if self.irc is not None:
                self.irc.part(irc_channel)
        await desk.aclose()
        log.info("chat %s: desk closed", name)

    async def _connection(self) -> IRCClient:
        assert self.irc_cfg is not None
        if self.irc is None:
            self.irc = IRCClient(self.irc_cfg, self._on_chat)
            await self.irc.start()
        return self.irc

    def _on_chat(self, line: IRCLine) -> None:
        desk = self._by_irc.get(line.params[0].lower())
        if desk is None:
            return  # a channel no longer routed here
        if line.command == "CLEARMSG":  # a mod deleted one message
            desk.retract(Retraction(msg_id=line.tags.get("target-msg-id", ""), why="a moderator deleted it"))
        elif line.command == "CLEARCHAT" and len(line.params) >= 2:  # a user timed out or banned
            why = "its sender was timed out" if line.tags.get("ban-duration") else "its sender was banned"
            desk.retract(Retraction(login=line.params[1].lower(), user_id=line.tags.get("target-user-id", ""), why=why))
        elif line.command == "CLEARCHAT":
            desk.retract(Retraction(everything=True, why="a moderator cleared the chat"))
        elif line.nick.lower() != (self.irc.nick if self.irc else "").lower():  # not our own line echoed
            msg = ChatMessage.from_privmsg(line, desk.cfg.roles)
            if msg is not None:
                desk.receive(msg)

    def stats(self) -> dict[str, Any]:
        return {
            "irc": self.irc.info() if self.irc is not None else None,
            "channels": {name: desk.stats() for name, desk in self.desks.items()},
        }
