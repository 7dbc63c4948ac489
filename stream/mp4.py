"""MP4 file from the channel's own packets (H.264 + AAC): offline renders and recordings.

The writer subscribes to the encoder like any viewer, so a clip is exactly what viewers get.
It muxes as packets come (on the event loop: writing a local file takes microseconds) and
starts at an IDR with timestamps from it (stream/mux.py), so a recording begun mid-stream
starts at zero.
"""

from __future__ import annotations

from pathlib import Path

import av

from stream.encoder import ChannelEncoder
from stream.mux import TimelineMuxer


class _Input:
    def __init__(self, writer: Mp4Writer, kind: str) -> None:
        self.writer = writer
        self.kind = kind
        self.wants_keyframe_start = kind == "video"

    def push(self, packet: av.Packet, is_key: bool) -> None:
        if not self.writer.closed:
            self.writer.muxer.mux(self.kind, packet)


class Mp4Writer:
    def __init__(
        self, path: Path, encoder: ChannelEncoder, *, comment: str | None = None, fragmented: bool = False
    ) -> None:
        """`fragmented`: write as it goes (live recordings), so a file cut short still plays."""
        self.path = path
        self.encoder = encoder
        encoder.enable_aac()
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if fragmented else {}
        self._container = av.open(str(path), "w", format="mp4", options=options)
        if comment:
            self._container.metadata["comment"] = comment
        self.muxer = TimelineMuxer(self._container, encoder)
        self._inputs = {"video": _Input(self, "video"), "audio": _Input(self, "audio")}
        self.closed = False
        encoder.video.subscribe(self._inputs["video"])
        encoder.aac.subscribe(self._inputs["audio"])

    @property
    def frames(self) -> int:
        return self.muxer.video_frames

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.encoder.video.unsubscribe(self._inputs["video"])
        self.encoder.aac.unsubscribe(self._inputs["audio"])
        self._container.close()
