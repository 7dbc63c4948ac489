"""The WebRTC viewers' own event loop, in a thread: sending to many viewers never delays a picture.

aiortc packetises, encrypts and sends every packet once per viewer (about 40 µs each, ~158
packets a second per viewer at 512x512). In the channel's loop, a video frame to 100 viewers was a
~20 ms burst of sends ahead of the Program's render requests, and the channel rendered fewer and
fewer frames in time as viewers joined (measured on 2 cores: 67-85 % in time at 100 viewers).
Peers live here instead: the channel's loop hands each encoded packet over once
(CrossLoopFanout), and everything per viewer (queues, packetising, SRTP, sockets, RTCP) runs on
this loop. One per process, shared by its channels.

Both loops share one GIL, so this moves scheduling delay, not CPU: the per-viewer work is still
Python. What crosses between the loops is small: a packet reference each way, a keyframe request,
a viewer's microphone frame.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import av

from stream.fanout import PacketFanout

T = TypeVar("T")


class SendLoop:
    """An event loop running in its own daemon thread; `await send.run(coro)` runs coro there."""

    def __init__(self, name: str = "webrtc-send") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def here(self) -> bool:
        """True when called from this loop's own thread."""
        return threading.current_thread() is self._thread

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on this loop and wait for it from any loop; cancelling the wait cancels it."""
        if self.here():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call(self, fn: Callable[..., object], *args: object) -> None:
        """Call fn(*args) on this loop, soon (thread-safe)."""
        self.loop.call_soon_threadsafe(fn, *args)


_shared: SendLoop | None = None
_shared_lock = threading.Lock()


def shared_send_loop() -> SendLoop:
    """This process's send loop, started the first time a channel needs it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SendLoop()
        return _shared


class CrossLoopFanout:
    """A channel's packet stream (a PacketFanout on the channel's loop) mirrored on the send loop.

    It subscribes to the channel's fan-out as one subscriber and forwards packets only while a
    viewer listens, so a channel without viewers costs the send loop nothing. The mirror keeps its
    own GOP for joiners; its keyframe requests go back to the channel's loop.
    """

    wants_keyframe_start = False  # every packet, keyframe or not: the mirror decides for its viewers

    def __init__(
        self,
        source: PacketFanout,
        send: SendLoop,
        channel_loop: asyncio.AbstractEventLoop,
        request_keyframe: Callable[[str], None] | None = None,
    ) -> None:
        self._source = source
        self._send = send
        self._channel_loop = channel_loop
        self._request_keyframe = request_keyframe
        self.mirror = PacketFanout(
            source.kind,
            request_keyframe=self._ask_keyframe if request_keyframe is not None else None,
            min_idr_gap_s=source.min_idr_gap_s,
            max_gop_replay=source.max_gop_replay,
        )
        source.subscribe(self)

    def push(self, packet: av.Packet, is_key: bool) -> None:
        """On the channel's loop, for each packet of the stream."""
        if self.mirror.subscribers:
            self._send.call(self.mirror.publish, packet, is_key)

    def _ask_keyframe(self, reason: str) -> None:
        assert self._request_keyframe is not None
        self._channel_loop.call_soon_threadsafe(self._request_keyframe, reason)

    def close(self) -> None:
        self._source.unsubscribe(self)
