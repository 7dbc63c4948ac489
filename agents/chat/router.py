"""The studio's one IRC connection (in the front), routing each channel's chat to its worker.

Every PRIVMSG (and each moderation of one: CLEARMSG, CLEARCHAT) is routed by its IRC channel to
the avatar channel that reads it, wherever that channel's worker runs; the desk there decides
what to do (desks.py). Channels can come and go at run time (the admin API) without touching the
connection of the others. The connection opens when the first channel names an IRC channel and
stays open (reading nothing) if the last one leaves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agents.chat.irc import IRCClient
from agents.chat.messages import IRCLine
from agents.config import ChannelConfig, StudioConfig
from agents.config.chat import IRCConfig

log = logging.getLogger(__name__)


class ChatRouter:
    def __init__(self, cfg: StudioConfig, deliver: Callable[[str, IRCLine], None]) -> None:
        """`deliver(channel name, line)` hands a line to the worker that runs that channel."""
        self.irc_cfg: IRCConfig | None = cfg.irc
        self.deliver = deliver
        self._by_irc: dict[str, str] = {}  # IRC channel -> avatar channel
        self.irc: IRCClient | None = None

    def check_channel(self, cfg: ChannelConfig) -> None:
        """Raise ValueError (with the fix) if a channel with this config could not have its chat routed.

        The admin API calls this before it builds the channel, so a clash is refused, not half-done."""
        irc_channel = cfg.chat.irc_channel if cfg.chat is not None else None
        if irc_channel is None:
            return
        if self.irc_cfg is None:
            raise ValueError(
                f"chat.irc_channel is {irc_channel!r} but the studio has no irc: section; fix: add one, or drop it"
            )
        owner = self._by_irc.get(irc_channel)
        if owner is not None and owner != cfg.name:
            raise ValueError(f"IRC channel {irc_channel} is already channel {owner}'s; fix: pick another")

    async def add(self, cfg: ChannelConfig) -> None:
        """Read the IRC channel of a channel now on air (nothing if it has none)."""
        irc_channel = cfg.chat.irc_channel if cfg.chat is not None else None
        if irc_channel is None:
            return
        self.check_channel(cfg)
        irc = await self._connection()
        self._by_irc[irc_channel] = cfg.name
        irc.join(irc_channel)
        log.info("chat %s: reading IRC %s", cfg.name, irc_channel)

    def remove(self, name: str) -> None:
        for irc_channel, owner in list(self._by_irc.items()):
            if owner == name:
                del self._by_irc[irc_channel]
                if self.irc is not None:
                    self.irc.part(irc_channel)

    def post(self, irc_channel: str, text: str) -> None:
        """A desk's line to its IRC channel (dropped, with a log line, without a connection)."""
        if self.irc is None:
            log.warning("chat: no IRC connection to post to %s", irc_channel)
            return
        self.irc.privmsg(irc_channel, text)

    async def _connection(self) -> IRCClient:
        assert self.irc_cfg is not None
        if self.irc is None:
            self.irc = IRCClient(self.irc_cfg, self._on_chat)
            await self.irc.start()
        return self.irc

    def _on_chat(self, line: IRCLine) -> None:
        name = self._by_irc.get(line.params[0].lower())
        if name is not None:  # else a channel no longer routed here
            self.deliver(name, line)

    def stats(self) -> dict[str, Any]:
        return {"irc": self.irc.info() if self.irc is not None else None, "routes": dict(self._by_irc)}

    async def aclose(self) -> None:
        if self.irc is not None:
            await self.irc.aclose()
            self.irc = None
