"""What crosses from a channel's loop to the WebRTC peers' send loop (stream/send_loop.py).

tests/test_webrtc_viewers.py checks that a real viewer's peer runs there.
"""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction

import av

from stream.fanout import PacketFanout, PacketQueue
from stream.send_loop import CrossLoopFanout, SendLoop
from tests.conftest import eventually


def _packet(pts: int) -> av.Packet:
    packet = av.Packet(b"\0\0\0\1")
    packet.pts, packet.time_base = pts, Fraction(1, 25)
    return packet


async def test_packets_cross_once_and_only_while_someone_listens() -> None:
    send = SendLoop("test-send")
    channel_thread = threading.current_thread()
    asked: list[tuple[str, threading.Thread]] = []
    source = PacketFanout("video", request_keyframe=lambda why: asked.append((why, threading.current_thread())))
    bridge = CrossLoopFanout(source, send, asyncio.get_running_loop(), source._request_keyframe)
    assert source.subscribers == 1, "the send loop is one subscriber of the channel's stream"

    source.publish(_packet(0), True)  # nobody on the send loop yet: nothing crosses
    await send.run(asyncio.sleep(0))
    assert bridge.mirror.stats["packets"] == 0

    queue = PacketQueue("video", 8)

    async def subscribe() -> None:
        bridge.mirror.subscribe(queue)

    await send.run(subscribe())
    await eventually(lambda: bool(asked), 5, "the joiner's keyframe request")
    assert asked == [("join", channel_thread)], "keyframe requests run on the channel's loop"

    source.publish(_packet(1), False)  # not a keyframe: the joiner waits for one
    source.publish(_packet(2), True)
    source.publish(_packet(3), False)
    got = [(await send.run(queue.get())).pts for _ in range(2)]
    assert got == [2, 3]
    assert bridge.mirror.stats["packets"] == 3

    bridge.close()
    assert source.subscribers == 0
    send.loop.call_soon_threadsafe(send.loop.stop)
