"""The channel's own packets (H.264 + AAC) into a container: MP4 files, FLV for RTMP, MPEG-TS for OBS.

Nothing is encoded again: every output repackages what the channel's one encoder made. A
container starts at an IDR and its timestamps count from that IDR's time on the channel's
timeline, for audio and video alike, so an output opened mid-stream (a recording, an RTMP
reconnect, OBS opening its media source) starts at zero with its sound in sync.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from stream.clock import AUDIO_RATE
from stream.encoder import ChannelEncoder

AAC_PRIMING_TICKS = 2048
"""Audio this much before the first IDR is kept: the AAC encoder's priming packets."""


def _copy(packet: av.Packet, pts: int, stream: av.stream.Stream) -> av.Packet:
    """A private copy for `stream`: muxing rewrites a packet's timing, and viewers share the original."""
    out = av.Packet(bytes(packet))
    out.pts = out.dts = pts
    out.time_base = packet.time_base
    out.is_keyframe = packet.is_keyframe
    out.stream = stream
    return out


class TimelineMuxer:
    """Muxes one channel's video and AAC packets into `container`, from the first IDR on."""

    def __init__(self, container: Any, encoder: ChannelEncoder) -> None:
        self.container = container
        self.encoder = encoder
        fmt = encoder.fmt
        self._video = container.add_stream("h264", rate=fmt.fps)
        self._video.width, self._video.height, self._video.pix_fmt = fmt.width, fmt.height, "yuv420p"
        self._video.time_base = Fraction(1, fmt.fps)
        self._audio = container.add_stream("aac", rate=AUDIO_RATE)
        self._audio.layout = "stereo"
        self.start: float | None = None
        """Seconds of the first IDR on the channel's timeline (None until it came)."""
        self._pending_audio: list[av.Packet] = []
        self.video_frames = 0
        self.audio_packets = 0

    def mux(self, kind: str, packet: av.Packet) -> None:
        """Write one packet; video before the first IDR and audio from before it are left out."""
        if packet.pts is None or packet.time_base is None:
            return
        if kind == "audio":
            if self.start is None:
                self._pending_audio.append(packet)
            else:
                self._mux_audio(packet)
            return
        if self.start is None:
            if not packet.is_keyframe:
                return
            self.start = float(packet.pts * packet.time_base)
            # The encoder's own SPS/PPS: the container header must describe exactly these packets.
            self._video.codec_context.extradata = self.encoder.h264_extradata
            for early in self._pending_audio:
                self._mux_audio(early)
            self._pending_audio.clear()
        pts = packet.pts - round(self.start / packet.time_base)
        self.container.mux(_copy(packet, pts, self._video))
        self.video_frames += 1

    def _mux_audio(self, packet: av.Packet) -> None:
        assert self.start is not None
        pts = packet.pts - round(self.start / packet.time_base)
        if pts >= -AAC_PRIMING_TICKS:
            self.container.mux(_copy(packet, pts, self._audio))
            self.audio_packets += 1


class PacketFeed:
    """A network output's view of the channel: video and AAC packets in one bounded, ordered queue.

    Video and audio share one queue so that an output that falls behind loses both together:
    on overflow the whole backlog goes, the feed waits for the next IDR (asking the encoder for
    one) and the muxer's timestamps carry on from the same base, so sound stays on its picture.
    """

    def __init__(self, encoder: ChannelEncoder, *, max_packets: int = 400) -> None:
        self.encoder = encoder
        self.max_packets = max_packets
        self.stats: Counter[str] = Counter()
        self._queue: deque[tuple[str, av.Packet]] = deque()
        self._event = asyncio.Event()
        self._waiting_key = True
        self._closed = False
        self._video = _KindInput(self, "video")
        self._audio = _KindInput(self, "audio")
        encoder.enable_aac()
        encoder.video.subscribe(self._video)
        encoder.aac.subscribe(self._audio)

    def _push(self, kind: str, packet: av.Packet, is_key: bool) -> None:
        if self._closed:
            return
        if self._waiting_key:
            if kind == "video" and is_key:
                self._waiting_key = False
            elif kind == "video":
                return
        if len(self._queue) >= self.max_packets:
            self.stats["dropped"] += len(self._queue)
            self.stats["resyncs"] += 1
            self._queue.clear()
            if not (kind == "video" and is_key):
                self._waiting_key = True
                self.encoder.request_keyframe("output lag")
                return
        self._queue.append((kind, packet))
        self._event.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def get(self) -> tuple[str, av.Packet]:
        """The next (kind, packet); raises EOFError once the feed is closed."""
        while not self._queue:
            if self._closed:
                raise EOFError
            self._event.clear()
            await self._event.wait()
        return self._queue.popleft()

    async def get_batch(self) -> list[tuple[str, av.Packet]]:
        """Everything queued (at least one packet): a network writer takes it in one go."""
        first = await self.get()
        batch = [first, *self._queue]
        self._queue.clear()
        return batch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.encoder.video.unsubscribe(self._video)
        self.encoder.aac.unsubscribe(self._audio)
        self._event.set()


class _KindInput:
    """Subscribes to one of the encoder's fan-outs on behalf of a feed."""

    def __init__(self, feed: PacketFeed, kind: str) -> None:
        self.wants_keyframe_start = kind == "video"
        self._push: Callable[[av.Packet, bool], None] = lambda p, k: feed._push(kind, p, k)

    def push(self, packet: av.Packet, is_key: bool) -> None:
        self._push(packet, is_key)
