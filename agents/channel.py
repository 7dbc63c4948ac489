"""One avatar channel: its face, voice, persona, program timeline, encoder and viewers.

  chat / voice -> turns (one at a time) -> answer pipeline (LLM -> clauses -> TTS) -> Program
  Program -> face renderer (lip-sync service, batched across channels) -> frames
  Program -> the channel's one encoder -> WebRTC viewers, MP4
Program events say what actually aired; turns, memory and captions keep only that.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCIceServer

from agents.answer import PrerenderedLines, TurnRunner
from agents.config import ChannelConfig
from agents.events import EventHub
from agents.listening import Listener
from agents.outputs import ChannelOutputs
from agents.persona import Knowledge, Memory, Persona
from agents.turns import TurnHandle
from models.avatars import resolve_pack
from models.lipsync.base import PreparedFace
from models.lipsync.idle import IdleMotion
from models.lipsync.params import MOUTH, N_MOUTH
from models.lipsync.service import LipSyncService
from models.protocols import LLM, TTS
from stream.clock import Clock, VideoFormat
from stream.encoder import ChannelEncoder
from stream.frames import EventKind, ProgramEvent, SpeechSegment
from stream.program import Program
from stream.webrtc import WebRTCEndpoint

log = logging.getLogger(__name__)

MAX_PENDING_TURNS = 4
"""Turns waiting for their go; beyond this a new one is refused (the viewer is told to wait)."""


CHROMA_COLOURS = {"green": (0, 177, 64), "blue": (0, 71, 187)}
"""The usual chroma-key colours; OBS's Chroma Key filter is set to the same one."""


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
        llm: Callable[[], LLM | None] = lambda: None,
        asr: Any = None,
        ice_servers: Sequence[RTCIceServer] = (),
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.fmt = VideoFormat(cfg.video.width, cfg.video.height, cfg.video.fps)
        self.lipsync = lipsync
        self.tts = tts
        self._llm = llm
        self.events = EventHub()
        self.encoder = ChannelEncoder(
            self.fmt, bitrate=cfg.video.bitrate_kbps * 1000, keyint_s=cfg.video.keyframe_interval_s, name=cfg.name
        )
        self.outputs = ChannelOutputs(cfg.outputs, self.encoder, cfg.name)
        self.listener = Listener(self, asr) if asr is not None else None
        self.webrtc = WebRTCEndpoint(
            self.encoder,
            ice_servers=ice_servers,
            name=cfg.name,
            on_mic=self.listener.push if self.listener else None,
            on_leave=self.listener.forget if self.listener else None,
        )
        p = cfg.persona
        knowledge = Knowledge.load(Path(p.knowledge) if p.knowledge else None, Path(p.answers) if p.answers else None)
        self.persona = Persona(p.name, p.system_prompt, p.style, p.max_answer_words, knowledge)
        self.memory = Memory(p.memory_tokens)
        self.lines = PrerenderedLines()
        self._clock = clock
        self.face: PreparedFace | None = None
        self.program: Program | None = None
        self.runner: TurnRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turn_ids = itertools.count(1)
        self._turn_lock = asyncio.Lock()
        self.turns: dict[str, TurnHandle] = {}
        """Turns not finished yet: waiting, producing or still on air."""

    async def prepare(self) -> None:
        """Load the avatar pack for this channel's frame size and pre-render the fallback lines."""
        pack = resolve_pack(self.cfg.avatar.pack)
        loop = asyncio.get_running_loop()
        self.face = await loop.run_in_executor(None, self.lipsync.prepare, pack, self.fmt.size)
        if self.cfg.avatar.background != "pack":
            rgb = CHROMA_COLOURS[self.cfg.avatar.background]
            self.face = await loop.run_in_executor(None, self.lipsync.with_background, self.face, rgb)
        seed = zlib.crc32(self.name.encode())
        source = FaceSource(self.face, self.lipsync, IdleMotion(seed, self.fmt.fps))
        self.program = Program(self.fmt, source, self.encoder, cue_dims=N_MOUTH, clock=self._clock, name=self.name)
        self.program.add_listener(self._on_program_event)
        conv = self.cfg.conversation
        await self.lines.prepare(
            self.tts,
            self.fmt.fps,
            {"canned": conv.canned_answer, "filler": conv.filler_line, "didnt_hear": conv.didnt_hear_line},
        )
        self.runner = TurnRunner(
            name=self.name,
            tts=self.tts,
            llm=None,
            persona=self.persona,
            memory=self.memory,
            lines=self.lines,
            enqueue=self._enqueue,
            fps=self.fmt.fps,
            first_token_timeout_s=conv.first_token_timeout_s,
        )

    async def start(self) -> None:
        """Go on air: the program runs (idle) until the channel is closed."""
        if self.program is None:
            await self.prepare()
        assert self.program is not None
        self._spawn(self.program.run(), "program")
        self.outputs.start()
        log.info("channel %s on air (%s, %dx%d@%d)", self.name, self.cfg.avatar.pack, *self.fmt.size, self.fmt.fps)
        if self.cfg.greeting:
            self.start_turn("say", self.cfg.greeting, source="system")

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.name}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("channel %s: task %s failed", self.name, task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ turns
    def start_turn(self, kind: str, text: str, *, source: str = "chat", priority: int = 0) -> TurnHandle:
        """Queue a turn ("answer" a question or "say" a text); it runs when the one before is out."""
        text = text.strip()
        if not text:
            raise ValueError("nothing to say")
        waiting = sum(1 for t in self.turns.values() if "started" not in t.stages)
        if waiting >= MAX_PENDING_TURNS:
            raise ChannelBusy(f"{waiting} messages are already waiting to be answered; try again shortly")
        turn = TurnHandle(f"{self.name}-{next(self._turn_ids)}", kind, text, source, priority)
        turn.mark("created")
        self.turns[turn.turn_id] = turn
        turn.task = self._spawn(self._run_turn(turn), f"turn {turn.turn_id}")
        return turn

    async def _run_turn(self, turn: TurnHandle) -> None:
        assert self.runner is not None
        self.runner.llm = self._llm()
        try:
            async with self._turn_lock:  # one turn produces at a time; its speech queues after the last
                turn.mark("started")
                if turn.kind == "answer":
                    self.events.publish({"type": "question", "turn": turn.turn_id, "text": turn.text})
                await self.runner.run(turn)
        finally:
            turn.enqueued_all = True
            turn.maybe_finish()
            self._spawn(self._close_turn(turn), f"close {turn.turn_id}")

    async def _close_turn(self, turn: TurnHandle) -> None:
        await turn.finished.wait()
        self.turns.pop(turn.turn_id, None)
        if turn.kind == "answer":
            self.memory.add("user", turn.text)
        self.memory.add("assistant", turn.heard_text())
        if self.program is not None and not self.program.speaking and not self.turns:
            self.events.publish({"type": "idle", "turn": turn.turn_id})

    def _enqueue(self, segment: SpeechSegment) -> None:
        assert self.program is not None
        self.program.enqueue(segment)

    def interrupt(self, reason: str) -> list[str]:
        """Stop every turn that is on air or being produced (barge-in, the page's stop button).

        Their LLM requests are aborted, their queued speech dropped, the audio cut at the next
        frame boundary and the face back to idle; turns still waiting for their go stay queued.
        """
        stopped = []
        for turn in list(self.turns.values()):
            if not turn.stages.get("started"):
                continue
            turn.interrupt(reason)
            if self.program is not None:
                self.program.cut(turn.turn_id)
            turn.maybe_finish()
            stopped.append(turn.turn_id)
        if stopped:
            log.info("channel %s: stopped %s (%s)", self.name, ", ".join(stopped), reason)
        return stopped

    def _on_program_event(self, event: ProgramEvent) -> None:
        turn = self.turns.get(event.turn_id)
        if event.kind is EventKind.SEGMENT_STARTED:
            if turn is not None:
                turn.mark("on_air")
            if event.text:
                self.events.publish({"type": "caption", "turn": event.turn_id, "text": event.text})
            self.events.publish({"type": "speaking", "turn": event.turn_id})
        elif event.kind is EventKind.SEGMENT_FINISHED and turn is not None:
            turn.on_segment_finished(event.text, event.played, event.duration, event.interrupted)
            if event.interrupted:
                self.events.publish({"type": "caption_cut", "turn": event.turn_id, "text": turn.heard_text()})

    # ------------------------------------------------------------------ info
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
            "chat": self.cfg.conversation.chat,
            "listening": self.listener is not None,
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
            "turns": len(self.turns),
            "outputs": self.outputs.info(),
        }

    async def aclose(self) -> None:
        await self.webrtc.aclose()
        if self.listener is not None:
            await self.listener.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.events.close()
        await self.outputs.aclose()
        await self.encoder.aclose()
