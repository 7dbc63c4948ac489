"""Viewers' microphones -> speech detection and transcription -> questions, and barge-in.

Each viewer who turns the mic on gets a listening session on the shared ASR. Speech starts
only after `interrupt_after_ms` of voice, so a cough or a click never counts; speech over the
avatar then stops its answer at once (barge-in), and the final transcript becomes a question.
An empty or failed transcript gets the pre-rendered "sorry, could you say that again?".

The answer starts on the likely final, while the end of speech (end_of_speech_ms of silence) is
still being waited out: it is held, not aired, and released when the final says the same, or
withdrawn when the viewer goes on talking. The wait overlaps the LLM and TTS instead of preceding them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import av

from agents.config import ConversationConfig
from agents.conversation.control import TurnControl
from agents.conversation.events import EventHub
from agents.conversation.turns import TurnHandle
from agents.supervisor import cancel_and_wait
from models.protocols import ASR, ASREvent

log = logging.getLogger(__name__)

MAX_LISTENING_VIEWERS = 50
"""Mics transcribed at once per channel; more are ignored (logged) to keep ASR within budget."""


class Listener:
    def __init__(self, channel: TurnControl, events: EventHub, cfg: ConversationConfig, asr: ASR) -> None:
        self.channel = channel
        self.events = events
        self.cfg = cfg
        self.asr = asr
        self._sessions: dict[str, Any] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, TurnHandle] = {}
        """Per viewer: the answer being prepared on a likely final, not on air until the final."""

    def push(self, viewer_id: str, frame: av.AudioFrame) -> None:
        session = self._sessions.get(viewer_id)
        if session is None:
            if len(self._sessions) >= MAX_LISTENING_VIEWERS:
                return
            from models.listen import ListenOptions, ListenSession

            conv = self.cfg
            options = ListenOptions(min_speech_ms=conv.interrupt_after_ms, end_silence_ms=conv.end_of_speech_ms)
            session = ListenSession(self.asr, options)
            self._sessions[viewer_id] = session
            self._tasks[viewer_id] = asyncio.create_task(self._consume(viewer_id, session))
        session.push(frame)

    def forget(self, viewer_id: str) -> None:
        self._withdraw(viewer_id, "the viewer left")
        session = self._sessions.pop(viewer_id, None)
        task = self._tasks.pop(viewer_id, None)
        if task is not None:
            task.cancel()
        if session is not None:
            asyncio.get_running_loop().create_task(session.aclose())

    async def _consume(self, viewer_id: str, session: Any) -> None:
        ch = self.channel
        async for event in session.events():
            event: ASREvent
            if event.kind == "speech_start":
                self._withdraw(viewer_id, "a new utterance began")
                self.events.publish({"type": "listening", "viewer": viewer_id})
                if any(t.started and not t.interrupted for t in ch.turns.values()):
                    ch.interrupt(f"viewer {viewer_id} spoke over the avatar")
            elif event.kind == "partial":
                self.events.publish({"type": "partial", "viewer": viewer_id, "text": event.text})
            elif event.kind == "likely_final":
                self._prepare(viewer_id, event.text)
            elif event.kind == "resumed":
                self._withdraw(viewer_id, "the viewer went on talking")
            elif event.kind == "final":  # `at`: where the voice ended, on the session's audio clock
                voice_end = time.monotonic() - max(0.0, session.position - event.at)
                self._question(viewer_id, event.text, voice_end)

    def _prepare(self, viewer_id: str, text: str) -> None:
        """Start answering `text`, held: the final will most likely say the same."""
        self._withdraw(viewer_id, "a newer likely final")
        try:
            turn = self.channel.start_turn("answer", text, source="voice", held=True)
        except Exception as exc:  # busy or paused: the final will try again and say why
            log.debug("channel %s: no answer prepared for viewer %s: %s", self.channel.name, viewer_id, exc)
            return
        turn.mark("asr_final")
        self._held[viewer_id] = turn

    def _withdraw(self, viewer_id: str, reason: str) -> None:
        held = self._held.pop(viewer_id, None)
        if held is not None:
            self.channel.withdraw_turn(held, reason)

    def _question(self, viewer_id: str, text: str, voice_end: float) -> None:
        ch = self.channel
        text = text.strip()
        self.events.publish({"type": "transcript", "viewer": viewer_id, "text": text})
        held = self._held.pop(viewer_id, None)
        if held is not None and held.text == text and not held.interrupted:
            ch.release_turn(held)
            self._stamp(held, voice_end)
            return
        if held is not None:
            ch.withdraw_turn(held, "the final transcript differs")
        try:
            turn = ch.start_turn("answer", text, source="voice") if text else None
            if turn is None:
                log.info("channel %s: nothing understood from viewer %s; asking again", ch.name, viewer_id)
                ch.start_turn("line", "didnt_hear", source="voice")
                return
        except Exception as exc:  # a full queue: the viewer will hear nothing, say so in the log
            log.warning("channel %s: voice question from %s dropped: %s", ch.name, viewer_id, exc)
            return
        self._stamp(turn, voice_end)

    def _stamp(self, turn: TurnHandle, voice_end: float) -> None:
        turn.stages["speech_end"] = voice_end
        turn.stages["vad_end"] = voice_end + self.cfg.end_of_speech_ms / 1000
        turn.mark("asr_final")

    async def aclose(self) -> None:
        for viewer_id in list(self._held):
            self._withdraw(viewer_id, "the channel is closing")
        for viewer_id in list(self._sessions):
            task = self._tasks.pop(viewer_id, None)
            if task is not None:
                await cancel_and_wait(task)
            await self._sessions.pop(viewer_id).aclose()
