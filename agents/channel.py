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
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiortc import RTCIceServer

from agents.answer import PrerenderedLines, TurnRunner
from agents.config import ChannelConfig
from agents.events import EventHub
from agents.face_source import FaceSource
from agents.listening import Listener
from agents.outputs import ChannelOutputs
from agents.persona import Knowledge, Memory, Persona
from agents.speech import speech_deadline
from agents.supervisor import Supervised
from agents.turns import TurnHandle
from models.avatars import resolve_pack
from models.lipsync.base import PreparedFace
from models.lipsync.idle import IdleMotion
from models.lipsync.params import N_MOUTH
from models.lipsync.service import LipSyncService
from models.protocols import LLM, TTS
from models.tts_service import ChannelVoice
from overlays.captions import CaptionBurner
from stream.clock import Clock, VideoFormat
from stream.encoder import ChannelEncoder
from stream.frames import EventKind, ProgramEvent, SpeechSegment
from stream.program import Program, ProgramSink
from stream.webrtc import WebRTCEndpoint

log = logging.getLogger(__name__)

MAX_PENDING_TURNS = 4
"""Turns waiting for their go; beyond this a new one is refused (the viewer is told to wait)."""


TASK_STOP_TIMEOUT_S = 5.0
"""How long a closing channel waits for a cancelled task before it names it and cancels it again."""

CHROMA_COLOURS = {"green": (0, 177, 64), "blue": (0, 71, 187)}
"""The usual chroma-key colours; OBS's Chroma Key filter is set to the same one."""


class ChannelBusy(RuntimeError):
    """Too much is already queued to be said."""


class ChannelPaused(RuntimeError):
    """The channel is paused (admin API or a mod): it shows its idle picture and says nothing."""


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
        self.ttft_observed: Counter[float] = Counter()
        """LLM time to first token of this channel's answers (seconds, to 10 ms) -> how often; for /metrics."""
        self.paused: str | None = None
        """Why the channel is paused (None: it is not)."""
        self.supervisor: Supervised | None = None

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
        burner = CaptionBurner(self.encoder, self.fmt) if self.cfg.outputs.burn_in_captions else None
        sink: ProgramSink = burner or self.encoder
        self.program = Program(self.fmt, source, sink, cue_dims=N_MOUTH, clock=self._clock, name=self.name)
        self.program.add_listener(self._on_program_event)
        if isinstance(self.tts, ChannelVoice):  # the shared TTS serves first the channel that runs dry first
            self.tts.deadline = speech_deadline(self.program)
        if burner is not None:
            self.program.add_listener(burner.on_event)
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
        # a failing program is restarted at once, then with growing pauses: its viewers keep a picture
        self.supervisor = Supervised(f"channel {self.name}: program", self.program.run)
        self._spawn(self.supervisor.run(), "program")
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
    def start_turn(
        self, kind: str, text: str, *, source: str = "chat", priority: int = 0, user: str = "", held: bool = False
    ) -> TurnHandle:
        """Queue a turn ("answer" a question or "say" a text); it runs when the one before is out.
        `held`: it is produced but airs only once `release_turn` (or never: `withdraw_turn`)."""
        text = text.strip()
        if not text:
            raise ValueError("nothing to say")
        if self.paused is not None:
            raise ChannelPaused(f"channel {self.name} is paused ({self.paused}); resume it first")
        waiting = sum(1 for t in self.turns.values() if "started" not in t.stages)
        if waiting >= MAX_PENDING_TURNS:
            raise ChannelBusy(f"{waiting} messages are already waiting to be answered; try again shortly")
        turn = TurnHandle(f"{self.name}-{next(self._turn_ids)}", kind, text, source, priority, user)
        if held:
            turn.go.clear()
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
                if turn.go.is_set():
                    self._announce(turn)
                await self.runner.run(turn)
        finally:
            turn.enqueued_all = True
            turn.maybe_finish()
            self._spawn(self._close_turn(turn), f"close {turn.turn_id}")

    def release_turn(self, turn: TurnHandle) -> None:
        """A held turn may air now (its question is final)."""
        if turn.go.is_set():
            return
        turn.go.set()
        turn.mark("released")
        if "started" in turn.stages:
            self._announce(turn)

    def withdraw_turn(self, turn: TurnHandle, reason: str) -> None:
        """Drop a held turn that has not aired: its LLM request is aborted, memory keeps nothing."""
        if turn.go.is_set() or turn.finished.is_set():
            return
        turn.withdrawn = True
        turn.interrupt(f"withdrawn: {reason}")
        turn.maybe_finish()
        log.info("channel %s: withdrew %s, prepared for %r (%s)", self.name, turn.turn_id, turn.text, reason)

    def _announce(self, turn: TurnHandle) -> None:
        if turn.kind == "answer":
            question = {"type": "question", "turn": turn.turn_id, "text": turn.text}
            self.events.publish({**question, "user": turn.user} if turn.user else question)

    async def _close_turn(self, turn: TurnHandle) -> None:
        await turn.finished.wait()
        self.turns.pop(turn.turn_id, None)
        if turn.withdrawn:
            return
        if "llm_first_token" in turn.stages and "started" in turn.stages:
            self.ttft_observed[round(turn.stages["llm_first_token"] - turn.stages["started"], 2)] += 1
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
            if turn.stages.get("started"):
                self.stop_turn(turn, reason)
                stopped.append(turn.turn_id)
        if stopped:
            log.info("channel %s: stopped %s (%s)", self.name, ", ".join(stopped), reason)
        return stopped

    def stop_turn(self, turn: TurnHandle, reason: str) -> None:
        """Stop one turn, waiting or on air: no more of it is made, its audio is cut at the next frame."""
        turn.interrupt(reason)
        if self.program is not None and turn.stages.get("started"):
            self.program.cut(turn.turn_id)
        turn.maybe_finish()

    def pause(self, reason: str) -> None:
        """Go quiet: stop what is being said, take no new turns; the idle picture and outputs go on."""
        self.paused = reason
        self.interrupt(f"paused: {reason}")
        for turn in list(self.turns.values()):  # waiting turns too: nothing airs while paused
            turn.interrupt(f"paused: {reason}")
            turn.maybe_finish()
        log.info("channel %s paused (%s)", self.name, reason)

    def resume(self) -> None:
        if self.paused is not None:
            log.info("channel %s resumed", self.name)
        self.paused = None

    def _on_program_event(self, event: ProgramEvent) -> None:
        turn = self.turns.get(event.turn_id)
        if event.kind is EventKind.SEGMENT_STARTED:
            if turn is not None:
                turn.mark("on_air")
            if event.text:
                caption = {"type": "caption", "turn": event.turn_id, "text": event.text}
                self.events.publish({**caption, "at": round(event.at, 3), "duration": round(event.duration, 3)})
            self.events.publish({"type": "speaking", "turn": event.turn_id})
        elif event.kind is EventKind.WORD:
            self.events.publish({"type": "word", "turn": event.turn_id, "word": event.text, "at": round(event.at, 3)})
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
            "paused": self.paused,
            "restarts": self.supervisor.restarts if self.supervisor else 0,
            "outputs": self.outputs.info(),
        }

    async def _stop_tasks(self) -> None:
        """Cancel the channel's tasks and wait for them. A task that outlives its cancel (one that
        swallowed the CancelledError) is named in the log and cancelled again: closing one channel
        must never hang the studio's shutdown."""
        tasks = set(self._tasks)
        while tasks:
            for task in tasks:
                task.cancel()
            _, tasks = await asyncio.wait(tasks, timeout=TASK_STOP_TIMEOUT_S)
            for task in tasks:
                log.error("channel %s: %s ignored its cancel; cancelling again", self.name, task.get_name())

    async def aclose(self) -> None:
        await self.webrtc.aclose()
        if self.listener is not None:
            await self.listener.aclose()
        await self._stop_tasks()
        self.events.close()
        await self.outputs.aclose()
        await self.encoder.aclose()
