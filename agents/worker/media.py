"""A channel's media half: its face, Program timeline, one encoder, outputs and WebRTC viewers.

  Program (audio clock, idle fill) -> face renderer (the shared lip-sync service) -> frames (I420)
  Program -> [captions burned in] -> the channel's one encoder -> WebRTC viewers, RTMP, recording
The Program runs under a supervisor: if it fails it is restarted and the viewers keep a picture.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import av
from aiortc import RTCIceServer

from agents.config import ChannelConfig
from agents.supervisor import Supervised, TaskSet
from agents.worker.face_source import FaceSource
from agents.worker.outputs import ChannelOutputs
from agents.worker.thumbnails import FrameTap
from models.avatars import resolve_pack
from models.lipsync.idle import IdleMotion
from models.lipsync.params import N_MOUTH
from models.protocols import LipSync, PreparedFace
from overlays.captions import CaptionBurner
from stream.clock import Clock, VideoFormat
from stream.encoder import ChannelEncoder
from stream.program import Program, ProgramSink
from stream.webrtc import WebRTCEndpoint

log = logging.getLogger(__name__)

CHROMA_COLOURS = {"green": (0, 177, 64), "blue": (0, 71, 187)}
"""The usual chroma-key colours; OBS's Chroma Key filter is set to the same one."""


class ChannelMedia:
    def __init__(
        self,
        cfg: ChannelConfig,
        *,
        lipsync: LipSync,
        ice_servers: Sequence[RTCIceServer] = (),
        clock: Clock | None = None,
        on_mic: Callable[[str, av.AudioFrame], None] | None = None,
        on_leave: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.fmt = VideoFormat(cfg.video.width, cfg.video.height, cfg.video.fps)
        self.lipsync = lipsync
        self.encoder = ChannelEncoder(
            self.fmt, bitrate=cfg.video.bitrate_kbps * 1000, keyint_s=cfg.video.keyframe_interval_s, name=cfg.name
        )
        self.outputs = ChannelOutputs(cfg.outputs, self.encoder, cfg.name)
        self.tap = FrameTap(self.encoder)
        """The last frame the encoder got, by reference: the studio page's thumbnails (thumbnails.py)."""
        self.webrtc = WebRTCEndpoint(
            self.encoder, ice_servers=ice_servers, name=cfg.name, on_mic=on_mic, on_leave=on_leave
        )
        self._clock = clock
        self.face: PreparedFace | None = None
        self.program: Program | None = None
        self.captions: CaptionBurner | None = None
        self.supervisor: Supervised | None = None
        self._tasks = TaskSet(f"channel {self.name}", self.name)

    async def prepare(self) -> Program:
        """Load the avatar pack for this channel's frame size; the Program, ready to run."""
        pack = resolve_pack(self.cfg.avatar.pack)
        background = CHROMA_COLOURS.get(self.cfg.avatar.background)
        self.face = await self.lipsync.prepare(pack, self.fmt.size, background)
        source = FaceSource(self.face, self.lipsync, IdleMotion(zlib.crc32(self.name.encode()), self.fmt.fps))
        self.captions = CaptionBurner(self.tap, self.fmt) if self.cfg.outputs.burn_in_captions else None
        sink: ProgramSink = self.captions or self.tap
        self.program = Program(self.fmt, source, sink, cue_dims=N_MOUTH, clock=self._clock, name=self.name)
        if self.captions is not None:
            self.program.add_listener(self.captions.on_event)
        return self.program

    def start(self) -> None:
        """Go on air: the program runs (idle) until the channel is closed."""
        assert self.program is not None, "prepare the channel first"
        # a failing program is restarted at once, then with growing pauses: its viewers keep a picture
        self.supervisor = Supervised(f"channel {self.name}: program", self.program.run)
        self._tasks.spawn(self.supervisor.run(), "program")
        self.outputs.start()
        log.info("channel %s on air (%s, %dx%d@%d)", self.name, self.cfg.avatar.pack, *self.fmt.size, self.fmt.fps)

    def info(self) -> dict[str, Any]:
        return {
            "width": self.fmt.width,
            "height": self.fmt.height,
            "fps": self.fmt.fps,
            "mouth_box": list(self.face.mouth_box) if self.face else None,
        }

    def stats(self) -> dict[str, Any]:
        program = self.program
        return {
            "viewers": len(self.webrtc.viewers),
            "av_offset_measured_ms": self.webrtc.av_offset_ms(),
            "viewer_sync": self.webrtc.sync(),
            "position_s": round(program.position, 3) if program else 0.0,
            "program": dict(program.stats) if program else {},
            "encoder": dict(self.encoder.stats),
            "keyframe_requests": dict(self.encoder.keyframe_requests),
            "video_subscribers": self.encoder.video.subscribers,
            "restarts": self.supervisor.restarts if self.supervisor else 0,
            "outputs": self.outputs.info(),
        }

    async def aclose(self) -> None:
        await self.webrtc.aclose()
        await self._tasks.aclose()
        await self.outputs.aclose()
        await self.encoder.aclose()
