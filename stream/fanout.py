"""Encode once, fan out: hand one encoded stream to every subscriber of a channel.

Each subscriber (a WebRTC viewer's track, an MP4 writer) has its own bounded queue, so a slow
one can lag or resync without touching the others. Policy per stream kind:

  H.264  a subscriber starts at an IDR. If its queue overflows, its backlog is dropped, it
         waits for the next IDR and one is requested: dropping single P-frames would corrupt the
         picture until the next IDR (notes/fanout.md).
  audio  the oldest packet is dropped (newest wins, about 100 ms of Opus at most).

A new video subscriber needs an IDR. If the last one is younger than the forced-IDR rate limit,
it is replayed with the few frames since, so the viewer has a picture at once (24-51 ms measured)
instead of waiting for the limit to pass.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

import av


class PacketSubscriber(Protocol):
    wants_keyframe_start: bool

    def push(self, packet: av.Packet, is_key: bool) -> None: ...


class PacketQueue:
    """A subscriber's bounded packet queue, read with `await get()`."""

    def __init__(self, kind: str, maxlen: int, on_lag: Callable[[str], None] | None = None) -> None:
        self.kind = kind
        self.maxlen = maxlen
        self.wants_keyframe_start = kind == "video"
        self._on_lag = on_lag
        self._queue: deque[av.Packet] = deque()
        self._waiting_key = self.wants_keyframe_start
        self._event = asyncio.Event()
        self._closed = False
        self.stats: Counter[str] = Counter()

    def push(self, packet: av.Packet, is_key: bool) -> None:
        if self._closed:
            return
        if self._waiting_key:
            if not is_key:
                self.stats["skipped_before_idr"] += 1
                return
            self._waiting_key = False
        if len(self._queue) >= self.maxlen:
            if not self.wants_keyframe_start:
                self._queue.popleft()
                self.stats["dropped"] += 1
            elif is_key:  # a fresh IDR replaces the whole backlog
                self.stats["dropped"] += len(self._queue)
                self._queue.clear()
            else:  # lagging video: resync at the next IDR
                self.stats["dropped"] += len(self._queue) + 1
                self.stats["resyncs"] += 1
                self._queue.clear()
                self._waiting_key = True
                if self._on_lag is not None:
                    self._on_lag("lag")
                return
        self._queue.append(packet)
        self.stats["queued"] += 1
        self._event.set()

    async def get(self) -> av.Packet:
        """The next packet; raises EOFError once the queue is closed."""
        while not self._queue:
            if self._closed:
                raise EOFError
            self._event.clear()
            await self._event.wait()
        self.stats["out"] += 1
        return self._queue.popleft()

    def close(self) -> None:
        self._closed = True
        self._event.set()


class PacketFanout:
    """One encoded stream (video or one audio codec) of one channel, and who receives it."""

    def __init__(
        self,
        kind: str,
        *,
        request_keyframe: Callable[[str], None] | None = None,
        min_idr_gap_s: float = 0.2,
        max_gop_replay: int = 6,
    ) -> None:
        self.kind = kind
        self._request_keyframe = request_keyframe
        self.min_idr_gap_s = min_idr_gap_s
        self.max_gop_replay = max_gop_replay
        self._subscribers: set[PacketSubscriber] = set()
        self._gop: list[av.Packet] = []  # packets since the last IDR, IDR first
        self._last_idr = float("-inf")
        self.stats: Counter[str] = Counter()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, sub: PacketSubscriber) -> None:
        self._subscribers.add(sub)
        if not sub.wants_keyframe_start:
            return
        fresh = time.monotonic() - self._last_idr < self.min_idr_gap_s
        if fresh and self._gop:
            for i, packet in enumerate(self._gop):
                sub.push(packet, i == 0)
            self.stats["gop_replays"] += 1
        elif self._request_keyframe is not None:
            self._request_keyframe("join")

    def unsubscribe(self, sub: PacketSubscriber) -> None:
        self._subscribers.discard(sub)

    def publish(self, packet: av.Packet, is_key: bool) -> None:
        if is_key:
            self._gop = [packet]
            self._last_idr = time.monotonic()
            self.stats["keyframes"] += 1
        elif len(self._gop) >= self.max_gop_replay:  # too long to replay to a joiner
            self._gop = []
        elif self._gop:
            self._gop.append(packet)
        self.stats["packets"] += 1
        for sub in list(self._subscribers):
            sub.push(packet, is_key)
