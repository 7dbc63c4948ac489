"""How many WebRTC viewers one client address, and a worker in all, may hold open.

Each open peer costs the worker a DTLS session, its packetising and its share of every packet of
the channel; a page that opens peers in a loop (or a script) must not take the worker's capacity
from everybody else. The count is of peers still open: one that closed frees its place at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PeerLimits:
    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._owners: dict[tuple[str, str], str] = {}  # (channel, viewer id) -> client address

    def refuse(self, client: str, channels: Mapping[str, Any]) -> str | None:
        """Why `client` may open no more peers now, or None."""
        open_now = {
            key: owner
            for key, owner in self._owners.items()
            if key[0] in channels and key[1] in channels[key[0]].media.webrtc.viewers
        }
        self._owners = open_now  # the closed ones are forgotten
        if sum(len(c.media.webrtc.viewers) for c in channels.values()) >= self.total:
            return f"this studio holds {self.total} viewers already; try again later"
        if sum(1 for owner in open_now.values() if owner == client) >= self.per_client:
            return f"this address holds {self.per_client} viewers already; close one first"
        return None

    def opened(self, client: str, channel: str, viewer: str) -> None:
        self._owners[(channel, viewer)] = client
