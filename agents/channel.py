"""One avatar channel: its face, voice, program timeline, encoder and viewers.

The channel wires the shared model services to the media path:

  text -> TTS (sentence by sentence) -> 48 kHz audio + viseme track -> Program timeline
  Program -> face renderer (lip-sync service, batched across channels) -> frames
  Program -> the channel's one encoder -> WebRTC viewers, MP4
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiortc import RTCIceServer

from agents.config import ChannelConfig
from agents.events import EventHub
from agents.speech import speech_segments
from models.avatars import resolve_pack
from models.lipsync.base import PreparedFace
from models.lipsync.idle import IdleMotion
from models.lipsync.params import MOUTH, N_MOUTH
from models.lipsync.service import LipSyncService
from models.protocols import TTS
from stream.clock import Clock, VideoFormat
from stream.encoder import ChannelEncoder
from stream.frames import EventKind, ProgramEvent
from stream.program import Program
from stream.webrtc import WebRTCEndpoint

log = logging.getLogger(__name__)

MAX_PENDING_TURNS = 4
"""Texts waiting to be spoken; beyond this `say` refuses (the viewer is told to wait)."""


class ChannelBusy(RuntimeError):
    """Too much is already queued to be said."""


class FaceSource:
    """The Program's FrameSource: idle motion + speech cues -> the shared lip-sync renderer."""

    def __init__(self, face: PreparedFace, lipsync: LipSyncService, idle: IdleMotion) -> None:
        self.face = face
        self.lipsync = lipsync
        self.idle = idle

    async def render(self, first: int, cues: np.ndarray) -> np.ndarray:
        params = self.idle.params(first, len(cues))
        params[:, MOUTH] = cues
        return await self.lipsync.render(self.face, params)

    def still(self) -> np.ndarray:
        return self.face.still


class Channel:
    def __init__(
        self,
        cfg: ChannelConfig,
        *,
        lipsync: LipSyncService,
        tts: TTS,
        ice_servers: Sequence[RTCIceServer] = (),
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.fmt = VideoFormat(cfg.video.width, cfg.video.height, cfg.video.fps)
        self.lipsync = lipsync
        self.tts = tts
        self.events = EventHub()
        self.encoder = ChannelEncoder(
            self.fmt, bitrate=cfg.video.bitrate_kbps * 1000, keyint_s=cfg.video.keyframe_interval_s, name=cfg.name
        )
        self.webrtc = WebRTCEndpoint(self.encoder, ice_servers=ice_servers, name=cfg.name)
        self._clock = clock
        self.face: PreparedFace | None = None
        self.program: Program | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turn_ids = itertools.count(1)
        self._speak_lock = asyncio.Lock()
        self._pending_turns = 0

    async def prepare(self) -> None:
        """Load the avatar pack for this channel's frame size (off the event loop)."""
        pack = resolve_pack(self.cfg.avatar.pack)
        loop = asyncio.get_running_loop()
        self.face = await loop.run_in_executor(None, self.lipsync.prepare, pack, self.fmt.size)
        seed = zlib.crc32(self.name.encode())
        source = FaceSource(self.face, self.lipsync, IdleMotion(seed, self.fmt.fps))
        self.program = Program(self.fmt, source, self.encoder, cue_dims=N_MOUTH, clock=self._clock, name=self.name)
        self.program.add_listener(self._on_program_event)

    async def start(self) -> None:
        """Go on air: the program runs (idle) until the channel is closed."""
        if self.program is None:
            await self.prepare()
        assert self.program is not None
        self._spawn(self.program.run(), "program")
        log.info("channel %s on air (%s, %dx%d@%d)", self.name, self.cfg.avatar.pack, *self.fmt.size, self.fmt.fps)
        if self.cfg.greeting:
            await self.say(self.cfg.greeting)

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.name}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("channel %s: task %s failed", self.name, task.get_name(), exc_info=task.exception())

    async def say(self, text: str) -> str:
        """Queue `text` to be spoken; returns the turn id at once (speech follows in the background)."""
        text = text.strip()
        if not text:
            raise ValueError("nothing to say")
        if self._pending_turns >= MAX_PENDING_TURNS:
            raise ChannelBusy(f"{self._pending_turns} messages are already waiting to be said; try again shortly")
        turn_id = f"{self.name}-{next(self._turn_ids)}"
        self._pending_turns += 1
        self._spawn(self._speak(turn_id, text), f"turn {turn_id}")
        return turn_id

    async def _speak(self, turn_id: str, text: str) -> None:
        assert self.program is not None
        try:
            async with self._speak_lock:  # one turn after another, never interleaved
                async for segment in speech_segments(self.tts, text, turn_id, self.fmt.fps):
                    self.program.enqueue(segment)
        finally:
            self._pending_turns -= 1

    def _on_program_event(self, event: ProgramEvent) -> None:
        if event.kind is EventKind.SEGMENT_STARTED:
            if event.text:
                self.events.publish({"type": "caption", "turn": event.turn_id, "text": event.text})
            self.events.publish({"type": "speaking", "turn": event.turn_id})
        elif event.kind is EventKind.SEGMENT_FINISHED and self.program is not None and not self.program.speaking:
            self.events.publish({"type": "idle", "turn": event.turn_id})

    def info(self) -> dict[str, Any]:
        """What a viewer page needs to know (nothing secret)."""
        return {
            "name": self.name,
            "title": self.cfg.display_title,
            "width": self.fmt.width,
            "height": self.fmt.height,
            "fps": self.fmt.fps,
            "mouth_box": list(self.face.mouth_box) if self.face else None,
            "max_chat_chars": self.cfg.max_chat_chars,
        }

    def stats(self) -> dict[str, Any]:
        program = self.program
        return {
            "viewers": len(self.webrtc.viewers),
            "position_s": round(program.position, 3) if program else 0.0,
            "program": dict(program.stats) if program else {},
            "encoder": dict(self.encoder.stats),
            "keyframe_requests": dict(self.encoder.keyframe_requests),
            "video_subscribers": self.encoder.video.subscribers,
        }

    async def aclose(self) -> None:
        await self.webrtc.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.events.close()
        await self.encoder.aclose()
