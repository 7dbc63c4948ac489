"""MP4 file from the channel's own packets (H.264 + AAC): offline renders and recordings.

The writer subscribes to the encoder like any viewer, so a clip is exactly what viewers get.
It starts at an IDR; its timestamps count from that IDR, so a recording begun mid-stream
starts at zero.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from stream.encoder import ChannelEncoder


class _Input:
    def __init__(self, writer: Mp4Writer, kind: str) -> None:
        self.writer = writer
        self.kind = kind
        self.wants_keyframe_start = kind == "video"

    def push(self, packet: av.Packet, is_key: bool) -> None:
        self.writer._push(self.kind, packet, is_key)


def _copy(packet: av.Packet, pts: int, stream: av.stream.Stream) -> av.Packet:
    """A private copy for `stream`: muxing rewrites a packet's timing, and viewers share the original."""
    out = av.Packet(bytes(packet))
    out.pts = out.dts = pts
    out.time_base = packet.time_base
    out.is_keyframe = packet.is_keyframe
    out.stream = stream
    return out


class Mp4Writer:
    def __init__(self, path: Path, encoder: ChannelEncoder, *, comment: str | None = None) -> None:
        self.path = path
        self.encoder = encoder
        encoder.enable_aac()
        fmt = encoder.fmt
        self._container = av.open(str(path), "w", format="mp4")
        if comment:
            self._container.metadata["comment"] = comment
        self._video = self._container.add_stream("h264", rate=fmt.fps)
        self._video.width, self._video.height, self._video.pix_fmt = fmt.width, fmt.height, "yuv420p"
        self._video.time_base = Fraction(1, fmt.fps)
        self._audio = self._container.add_stream("aac", rate=48_000)
        self._audio.layout = "stereo"
        self._start: float | None = None  # seconds of the first IDR on the channel's timeline
        self._inputs = {"video": _Input(self, "video"), "audio": _Input(self, "audio")}
        self._pending_audio: list[av.Packet] = []
        self.frames = 0
        self._closed = False
        encoder.video.subscribe(self._inputs["video"])
        encoder.aac.subscribe(self._inputs["audio"])

    def _push(self, kind: str, packet: av.Packet, is_key: bool) -> None:
        if self._closed or packet.pts is None or packet.time_base is None:
            return
        if kind == "audio":
            if self._start is None:
                self._pending_audio.append(packet)
            else:
                self._mux_audio(packet)
            return
        if self._start is None:
            self._start = float(packet.pts * packet.time_base)
            self._video.codec_context.extradata = self.encoder.h264_extradata
            for early in self._pending_audio:
                self._mux_audio(early)
            self._pending_audio.clear()
        pts = packet.pts - round(self._start / packet.time_base)
        self._container.mux(_copy(packet, pts, self._video))
        self.frames += 1

    def _mux_audio(self, packet: av.Packet) -> None:
        assert self._start is not None
        pts = packet.pts - round(self._start / packet.time_base)
        if pts >= -2048:  # keep the encoder's priming packets, drop audio from before the clip
            self._container.mux(_copy(packet, pts, self._audio))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.encoder.video.unsubscribe(self._inputs["video"])
        self.encoder.aac.unsubscribe(self._inputs["audio"])
        self._container.close()
