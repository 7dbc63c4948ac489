"""A channel as MPEG-TS over HTTP, from its one encoder: what OBS's Media Source plays.

Debian's OBS has no Browser Source, but its Media Source (FFmpeg) opens any HTTP URL. Each HTTP
client gets its own PacketFeed and TimelineMuxer (stream/mux.py) writing an MPEG-TS into an
in-memory pipe that is sent as a chunked response: the channel's own H.264 + AAC packets,
repackaged, never encoded again. A client starts at an IDR with timestamps from zero.

Low latency (measured with bench/outputs.py): every packet leaves the muxer at once
(libavformat's interleaver would hold each video frame until the AAC of its time is out of the
encoder, ~40 ms), a video PES carries its length (else a player waits for the next frame to
know one ended) and audio waits at most one AAC frame for a PES. The PCR leads by 40 ms, not
FFmpeg's 0.7 s that players hold back. A stream begins with AAC before its first IDR, so that
a player probing only the first packet (OBS, stream/obs.py) still finds the sound.
Muxing costs ~50 µs a packet (~4 ms of CPU a second per client at 25 fps), so it runs on the
event loop; what could block, a slow client's socket, is bounded twice: its feed drops its
backlog and resyncs at the next IDR when it falls 2 s behind (the channel never waits for
it), and a client that takes nothing for `write_timeout_s` is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from typing import Any

import av
from aiohttp import web

from stream.clock import AUDIO_RATE
from stream.encoder import ChannelEncoder
from stream.mux import AAC_PRIMING_TICKS, PacketFeed, TimelineMuxer

log = logging.getLogger(__name__)

TS_OPTIONS = {
    "flush_packets": "1",
    "max_interleave_delta": "1",  # microseconds: write what comes, in the order it comes
    "omit_video_pes_length": "0",
    "pes_payload_size": "0",  # FFmpeg rounds it up to 170 bytes: speech AAC frames go alone
    "max_delay": "40000",  # PCR lead; an audio PES waits at most half of it
}
PRIMING_S = AAC_PRIMING_TICKS / AUDIO_RATE
FEED_PACKETS = 150
"""About 2 s of video + AAC packets: a client further behind skips to the next IDR."""
SEND_BUFFER = 64 * 1024
"""Kernel send buffer per client (Linux doubles it): the backlog waits in the feed, where it can
be dropped at an IDR, not in the socket, where it would only add latency."""


MAX_HELD = 64
"""Packets (~0.9 s) a stream's start is held back at most, waiting for its first AAC."""
MAX_RETRIES = 3


def _seconds(packet: av.Packet) -> float:
    return float(packet.pts * packet.time_base)


class _Pipe:
    """The container's output file: what the muxer wrote since the last take (one batch at most)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class TsClient:
    """One HTTP client of one channel's MPEG-TS stream."""

    def __init__(self, encoder: ChannelEncoder, peer: str, *, max_packets: int) -> None:
        self.encoder = encoder
        self.peer = peer
        self.feed = PacketFeed(encoder, max_packets=max_packets)  # subscribing asks for an IDR
        self._pipe = _Pipe()
        self._container: Any = av.open(self._pipe, "w", format="mpegts", options=TS_OPTIONS)
        self.muxer = TimelineMuxer(self._container, encoder)
        self._held: list[tuple[str, av.Packet]] | None = []
        """Packets kept back until the stream can begin with audio (None once it has begun)."""
        self._retries = 0
        self.bytes_sent = 0

    def mux(self, batch: list[tuple[str, av.Packet]]) -> bytes:
        if self._held is not None:
            self._held += batch
            batch = self._audio_first()
        for kind, packet in batch:
            self.muxer.mux(kind, packet)
        return self._pipe.take()

    def _audio_first(self) -> list[tuple[str, av.Packet]]:
        """The held packets in time order, from an IDR that has AAC just before it, once that AAC is out.

        A player that probes little (OBS with fflags=nobuffer probesize=32) learns the AAC
        parameters only from the first packet; when that is the IDR, it plays without sound. The
        AAC encoder's delay brings that audio out ~20 ms after the IDR. An IDR replayed to a new
        subscriber (stream/fanout.py) is older than the subscription, so its audio went by:
        then a fresh IDR is asked for (a few tries at most; the stream never waits for ever).
        """
        assert self._held is not None
        held = self._held
        key = next((i for i, (kind, p) in enumerate(held) if kind == "video" and p.is_keyframe), None)
        if key is None:  # after a retry: waiting for the fresh IDR
            del held[:-MAX_HELD]
            return []
        start = _seconds(held[key][1])
        audio = [p for kind, p in held if kind == "audio"]
        ready = sum(start - PRIMING_S <= _seconds(p) < start for p in audio) >= 2
        if not ready and not any(_seconds(p) >= start for p in audio) and len(held) < MAX_HELD:
            return []  # its audio is not out yet
        if not ready and self._retries < MAX_RETRIES:
            self._retries += 1
            self._held = [("audio", p) for p in audio][-MAX_HELD:]
            self.encoder.request_keyframe("mpegts start")
            return []
        self._held = None
        video = [(kind, p) for kind, p in held[key:] if kind == "video"]
        return sorted([*video, *(("audio", p) for p in audio)], key=lambda item: _seconds(item[1]))

    def close(self) -> None:
        """Unsubscribe from the encoder; the client's send loop ends at its next packet wait."""
        self.feed.close()
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            self._container.close()


class MpegTsServer:
    """Serves channels as MPEG-TS over HTTP; knows its clients so that a shutdown can end them."""

    def __init__(self, *, max_packets: int = FEED_PACKETS, write_timeout_s: float = 10.0) -> None:
        self.max_packets = max_packets
        self.write_timeout_s = write_timeout_s
        self.clients: set[TsClient] = set()
        self.stats: Counter[str] = Counter()

    def clients_of(self, encoder: ChannelEncoder) -> list[TsClient]:
        return [c for c in self.clients if c.encoder is encoder]

    async def serve(self, request: web.Request, encoder: ChannelEncoder, name: str = "") -> web.StreamResponse:
        """The response for GET /c/{channel}/stream.ts: MPEG-TS until the client goes away."""
        response = web.StreamResponse(
            headers={"Content-Type": "video/mp2t", "Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"}
        )
        response.enable_chunked_encoding()
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        await response.prepare(request)
        client = TsClient(encoder, request.remote or "?", max_packets=self.max_packets)
        self.clients.add(client)
        self.stats["clients"] += 1
        log.info("channel %s: MPEG-TS client %s joined (%d watching)", name, client.peer, len(self.clients_of(encoder)))
        reason = "left"
        try:
            while True:
                data = client.mux(await client.feed.get_batch())
                if data:
                    async with asyncio.timeout(self.write_timeout_s):
                        await response.write(data)
                    client.bytes_sent += len(data)
        except EOFError:
            reason = "stream closed"
        except TimeoutError:
            reason = f"took nothing for {self.write_timeout_s:g} s"
            self.stats["dropped_slow"] += 1
        except (ConnectionError, RuntimeError) as exc:  # aiohttp: "Cannot write to closing transport"
            reason = f"left ({type(exc).__name__})"
        finally:
            client.close()
            self.clients.discard(client)
            self.stats["resyncs"] += client.feed.stats["resyncs"]
        log.info(
            "channel %s: MPEG-TS client %s %s after %d frames (%d resyncs)",
            name,
            client.peer,
            reason,
            client.muxer.video_frames,
            client.feed.stats["resyncs"],
        )
        return response

    def close(self) -> None:
        """End every stream (server shutdown), or the server would wait for them."""
        for client in list(self.clients):
            client.close()
