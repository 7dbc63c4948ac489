"""The channel as MPEG-TS over HTTP (what OBS's Media Source plays), read back by real PyAV clients."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

import av
import numpy as np
import pytest

from tests.conftest import ServerThread, eventually, free_port, studio_config
from tests.obs_server import TsPlayer, TsSite, roomy


class _Published:
    """Every H.264 packet the channel's encoder publishes (a fan-out subscriber that never lags)."""

    wants_keyframe_start = False

    def __init__(self) -> None:
        self.payloads: set[bytes] = set()

    def push(self, packet: av.Packet, is_key: bool) -> None:
        self.payloads.add(bytes(packet))


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ServerThread, TsSite]]:
    cfg = roomy(studio_config([{"name": "cast", "video": {"width": 256, "height": 256}}]))
    server = ServerThread(cfg).start()
    site: TsSite | None = None
    try:
        # a small backlog and a short write timeout: the slow-client test sees both at work in seconds
        site = server.call(TsSite(server.studio, free_port(), max_packets=50, write_timeout_s=2.0).start())
        yield server, site
    finally:
        if site is not None:
            server.call(site.stop())
        server.stop()


def _rate(times: list[float], since: float) -> float:
    times = [t for t in times if t >= since]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


async def test_two_clients_play_video_and_aac_from_the_channels_one_encoder(
    served: tuple[ServerThread, TsSite],
) -> None:
    server, site = served
    channel = server.studio.channels["cast"]
    published = _Published()

    async def listen() -> None:
        channel.encoder.video.subscribe(published)

    server.call(listen())
    video_subs, aac_subs = channel.encoder.video.subscribers, channel.encoder.aac.subscribers
    url = f"{site.url}/c/cast/stream.ts"
    first, second = TsPlayer(url).start(), TsPlayer(url).start()
    try:
        await eventually(lambda: min(len(first.got.video), len(second.got.video)) >= 25, 30, "video at both clients")

        async def say() -> None:
            channel.conversation.start_turn("say", "Hello to everybody watching the stream.")

        server.call(say())
        loud = lambda p: any(rms > 1000 for *_, rms in p.got.audio)  # noqa: E731
        await eventually(lambda: loud(first) and loud(second), 20, "the speech in AAC at both clients")
        assert first.got.error is None and second.got.error is None, (first.got.error, second.got.error)
        assert first.got.codecs == {"video": "h264", "audio": "aac"}
        # each client starts at an IDR with timestamps from zero
        assert first.got.video[0][1] < 0.5 and second.got.video[0][1] < 0.5
        for player in (first, second):
            image = player.got.last_image
            assert image is not None and image.shape == (256, 256, 3)
            gap = np.abs(image.mean((0, 1)) - channel.face.still.mean((0, 1))).max()
            assert gap < 20, f"the picture is not the channel's avatar (colour gap {gap:.1f})"
        # two clients, one encoder: each is one more subscriber of the channel's own fan-outs ...
        assert channel.encoder.video.subscribers == video_subs + 2
        assert channel.encoder.aac.subscribers == aac_subs + 2
        assert len(site.ts.clients_of(channel.encoder)) == 2
        # ... and every H.264 frame they got is, byte for byte, one the channel's encoder made
        for player in (first, second):
            payloads = list(player.got.video_payloads)
            assert len(payloads) >= 25
            assert all(p in published.payloads for p in payloads), "a client got video the encoder did not make"
    finally:
        first.stop()
        second.stop()
        channel.encoder.video.unsubscribe(published)
    # disconnected clients leave nothing behind
    await eventually(
        lambda: channel.encoder.video.subscribers == video_subs - 1 and channel.encoder.aac.subscribers == aac_subs,
        10,
        "the clients' feeds to be removed",
    )
    assert site.ts.clients == set()


async def test_a_client_that_reads_nothing_is_resynced_then_dropped_and_never_stalls_the_channel(
    served: tuple[ServerThread, TsSite],
) -> None:
    server, site = served
    channel = server.studio.channels["cast"]
    dropped, resyncs = site.ts.stats["dropped_slow"], site.ts.stats["resyncs"]
    video_subs = channel.encoder.video.subscribers
    url = f"{site.url}/c/cast/stream.ts"
    good = TsPlayer(url).start()
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window: the server's writes back up soon
    try:
        await eventually(lambda: len(good.got.video) >= 10, 20, "video at the good client")
        stuck.connect(("127.0.0.1", site.port))
        stuck.sendall(b"GET /c/cast/stream.ts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        since, position = time.monotonic(), channel.program.position
        await eventually(lambda: site.ts.stats["dropped_slow"] > dropped, 60, "the stuck client to be dropped")
        assert site.ts.stats["resyncs"] > resyncs, "the stuck client's backlog should have been dropped first"
        # meanwhile the channel and its other client went on at the frame rate
        arrivals = [t for t, _ in good.got.video if t >= since]
        assert _rate(arrivals, since) >= 0.9 * 25
        assert np.diff(arrivals).max() < 0.5
        assert channel.program.position - position >= 0.9 * (time.monotonic() - since)
        assert len(site.ts.clients_of(channel.encoder)) == 1
        assert channel.encoder.video.subscribers == video_subs + 1
    finally:
        stuck.close()
        good.stop()


def _first_pes_stream_id(url: str) -> int:
    """The PES stream id (0xE0.. video, 0xC0.. audio) of the first PES in the stream's bytes."""
    with urllib.request.urlopen(url, timeout=10) as response:
        while True:
            packet = response.read(188)
            assert len(packet) == 188 and packet[0] == 0x47, "not MPEG-TS"
            adaptation = (packet[3] >> 4) & 0x3
            payload = packet[4 + (1 + packet[4] if adaptation & 0x2 else 0) :]
            if packet[1] & 0x40 and payload[:3] == b"\x00\x00\x01":  # a payload unit starts with a PES
                return payload[3]


def test_every_stream_begins_with_sound_before_its_first_picture(served: tuple[ServerThread, TsSite]) -> None:
    """OBS's Media Source probes only the first packet (stream/obs.py): it must carry the AAC parameters."""
    _, site = served
    ids = [_first_pes_stream_id(f"{site.url}/c/cast/stream.ts") for _ in range(5)]
    assert all(0xC0 <= i <= 0xDF for i in ids), [hex(i) for i in ids]


async def test_a_shutdown_ends_every_stream(served: tuple[ServerThread, TsSite]) -> None:
    server, site = served
    player = TsPlayer(f"{site.url}/c/cast/stream.ts").start()
    try:
        await eventually(lambda: len(player.got.video) >= 5, 20, "video")

        async def close() -> None:
            site.ts.close()

        server.call(close())
        await eventually(lambda: player.done, 15, "the client to see its stream end")
        assert site.ts.clients == set()
    finally:
        player.stop()
