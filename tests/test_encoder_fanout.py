"""The channel's one encoder and its fan-out: bitstream rules and per-subscriber queue policies."""

from __future__ import annotations

import av
import numpy as np
import pytest

from stream.clock import VideoFormat
from stream.encoder import ChannelEncoder, parameter_sets
from stream.fanout import PacketFanout, PacketQueue

FMT = VideoFormat(128, 128, 25)


def nal_types(data: bytes) -> list[int]:
    return [chunk[0] & 0x1F for chunk in data.split(b"\x00\x00\x01")[1:] if chunk]


class Collect:
    wants_keyframe_start = False

    def __init__(self) -> None:
        self.packets: list[av.Packet] = []

    def push(self, packet: av.Packet, is_key: bool) -> None:
        self.packets.append(packet)


async def encode_frames(encoder: ChannelEncoder, n: int, force_at: tuple[int, ...] = ()) -> list[av.Packet]:
    sink = Collect()
    encoder.video.subscribe(sink)
    for i in range(n):
        if i in force_at:
            encoder.request_keyframe("test")
        image = np.full((128, 128, 3), (i * 7) % 255, np.uint8)
        encoder.on_video(image, i)
        await encoder.ready()
    await encoder.drain()
    return sink.packets


async def test_h264_is_annexb_with_parameter_sets_before_every_idr() -> None:
    encoder = ChannelEncoder(FMT, keyint_s=1.0, min_idr_gap_s=0.0)
    try:
        packets = await encode_frames(encoder, 60, force_at=(10,))
    finally:
        await encoder.aclose()
    assert len(packets) == 60, "one access unit per frame (zerolatency)"
    assert [p.pts for p in packets] == list(range(60))
    keys = [i for i, p in enumerate(packets) if p.is_keyframe]
    assert keys == [0, 10, 35], "forced IDR at 10 and the periodic one 25 frames later"
    for i in keys:
        data = bytes(packets[i])
        assert data.startswith(b"\x00\x00\x00\x01") or data.startswith(b"\x00\x00\x01")
        types = nal_types(data)
        assert types.index(7) < types.index(8) < types.index(5), types  # SPS, PPS, then the IDR slice
    assert all(5 not in nal_types(bytes(p)) for i, p in enumerate(packets) if i not in keys)
    sps = parameter_sets(bytes(packets[0]))
    assert sps is not None and encoder.h264_extradata == sps
    assert sps[5:8] == bytes.fromhex("42c01f"), "Constrained Baseline, level 3.1"


async def test_forced_keyframes_are_rate_limited() -> None:
    encoder = ChannelEncoder(FMT, keyint_s=10.0, min_idr_gap_s=3600)
    try:
        packets = await encode_frames(encoder, 20, force_at=(3, 5, 7))
    finally:
        await encoder.aclose()
    assert [i for i, p in enumerate(packets) if p.is_keyframe] == [0], "requests within the gap are merged away"
    assert encoder.keyframe_requests["test"] == 3


def packet(key: bool, n: int) -> av.Packet:
    p = av.Packet(bytes([n % 256]))
    p.is_keyframe = key
    p.pts = n
    return p


def test_video_queue_starts_at_an_idr_and_resyncs_when_it_lags() -> None:
    requests: list[str] = []
    q = PacketQueue("video", maxlen=4, on_lag=requests.append)
    q.push(packet(False, 0), False)
    q.push(packet(False, 1), False)
    assert q.stats["skipped_before_idr"] == 2 and not q._queue
    for n in range(2, 6):
        q.push(packet(n == 2, n), n == 2)
    q.push(packet(False, 6), False)  # the 5th packet overflows a viewer that stopped reading
    assert q.stats["resyncs"] == 1 and requests == ["lag"] and not q._queue
    q.push(packet(False, 7), False)
    assert not q._queue, "P-frames are skipped until the next IDR"
    q.push(packet(True, 8), True)
    assert [p.pts for p in q._queue] == [8]


def test_audio_queue_drops_the_oldest() -> None:
    q = PacketQueue("audio", maxlen=3)
    for n in range(5):
        q.push(packet(True, n), True)
    assert [p.pts for p in q._queue] == [2, 3, 4] and q.stats["dropped"] == 2


def test_new_video_subscriber_gets_a_fresh_gop_or_asks_for_a_keyframe() -> None:
    requests: list[str] = []
    fanout = PacketFanout("video", request_keyframe=requests.append, min_idr_gap_s=3600)
    early = PacketQueue("video", 8)
    fanout.subscribe(early)
    assert requests == ["join"], "nothing to replay yet: ask the encoder for an IDR"
    fanout.publish(packet(True, 0), True)
    fanout.publish(packet(False, 1), False)
    late = PacketQueue("video", 8)
    fanout.subscribe(late)
    assert requests == ["join"], "a recent IDR is replayed instead"
    assert [p.pts for p in late._queue] == [0, 1]
    assert [p.pts for p in early._queue] == [0, 1]


@pytest.mark.parametrize("n_subscribers", [1, 5])
def test_every_subscriber_gets_the_same_packet_objects(n_subscribers: int) -> None:
    fanout = PacketFanout("audio")
    subs = [Collect() for _ in range(n_subscribers)]
    for s in subs:
        fanout.subscribe(s)
    sent = [packet(True, n) for n in range(3)]
    for p in sent:
        fanout.publish(p, True)
    assert all(all(a is b for a, b in zip(s.packets, sent, strict=True)) for s in subs)
