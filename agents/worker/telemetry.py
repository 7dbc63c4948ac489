"""What the studio page shows of a worker beyond Studio.health(): the last answers with their latency,
the chat queues, the renderer's batch sizes, LLM first-token times and the thumbnails.

Everything is read from the live objects when asked (about once a second, by the front's
sampler), nothing is counted on a hot path. Answers are the turns a channel's Program reported
going on air (its SEGMENT_STARTED event), kept by reference so their state and heard text stay
current; the channel's own bookkeeping forgets a turn once it has aired. The worker keeps only the
last few; the hour of history lives in the front (agents/front/history.py), which survives a
worker's restart.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from agents.chat.desk import ChatDesk
from agents.conversation.turns import TurnHandle
from agents.worker.channel import Channel
from agents.worker.studio import Studio
from agents.worker.thumbnails import Thumbnails
from stream.frames import EventKind, ProgramEvent
from stream.program import Program

ANSWERS_KEPT = 20
"""Turns kept per channel (the front keeps the hour's latencies)."""
QUEUE_SHOWN = 25
"""Waiting chat questions listed per channel (the count says how many there are in all)."""
TEXT_SHOWN = 200
"""Characters of a question or an answer shown."""


def answer_record(turn: TurnHandle) -> dict[str, Any]:
    """One aired turn for the page: what was asked, what was heard, and how long it took to air.

    latency_ms runs from the end of the viewer's voice (a voice turn: its `speech_end` stage) or
    from the moment the turn was made (chat, say, system lines) to its first audio on air."""
    stages = turn.stages
    on_air = stages["on_air"]
    voice = "speech_end" in stages
    begin = stages["speech_end"] if voice else stages.get("created", on_air)
    ttft = stages["llm_first_token"] - stages["started"] if "llm_first_token" in stages and turn.started else None
    return {
        "turn": turn.turn_id,
        "kind": turn.kind,
        "source": turn.source,
        "user": turn.user,
        "question": turn.text[:TEXT_SHOWN],
        "heard": turn.heard_text()[:TEXT_SHOWN],
        "state": turn.state.value,
        "latency_ms": round((on_air - begin) * 1000),
        "from": "speech_end" if voice else "created",
        "at": round(time.time() - (time.monotonic() - on_air), 3),
        "ttft_ms": round(ttft * 1000) if ttft is not None else None,
    }


class AnswerLog:
    """The last turns of one channel that went on air (a listener on its Program)."""

    def __init__(self, channel: Channel, program: Program) -> None:
        self.channel = channel
        self.program = program
        self.turns: deque[TurnHandle] = deque(maxlen=ANSWERS_KEPT)
        program.add_listener(self.on_event)
        self.sweep()

    def _keep(self, turn: TurnHandle) -> None:
        if "on_air" in turn.stages and turn not in self.turns:
            self.turns.append(turn)

    def on_event(self, event: ProgramEvent) -> None:
        if event.kind is EventKind.SEGMENT_STARTED:
            turn = self.channel.conversation.turns.get(event.turn_id)
            if turn is not None:
                self._keep(turn)

    def sweep(self) -> None:
        """Turns already on air when the log was made (a channel added just before the first look)."""
        for turn in sorted(self.channel.conversation.turns.values(), key=lambda t: t.stages.get("on_air", 0)):
            self._keep(turn)

    def records(self) -> list[dict[str, Any]]:
        return [answer_record(turn) for turn in self.turns]


def chat_queue(desk: ChatDesk) -> list[dict[str, Any]]:
    """Who waits in the channel's chat queue, in the order they will be answered."""
    now = desk.queue.clock()
    return [
        {
            "user": q.msg.display_name or q.msg.login,
            "text": q.text[:TEXT_SHOWN],
            "tier": q.tier,
            "source": q.msg.source,
            "waited_s": round(max(0.0, now - q.asked_at), 1),
        }
        for q in desk.queue.snapshot()[:QUEUE_SHOWN]
    ]


class StudioTelemetry:
    """A worker's telemetry for the studio page (the front asks through its WorkerLink)."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.thumbnails = Thumbnails()
        self._logs: dict[str, AnswerLog] = {}

    def _sync(self) -> None:
        """Follow the channels on air: a log for each new one (or new Program), none for the gone."""
        channels = self.studio.channels
        for name in [n for n in self._logs if n not in channels]:
            del self._logs[name]
        for name, channel in channels.items():
            program = channel.program
            if program is not None and (name not in self._logs or self._logs[name].program is not program):
                self._logs[name] = AnswerLog(channel, program)
        self.thumbnails.forget_except(set(channels))

    def snapshot(self) -> dict[str, Any]:
        self._sync()
        studio = self.studio
        lipsync = studio.lipsync.metrics()
        tensor = lipsync.get("tensor", {})
        keys = lipsync.get("keys", {})
        channels: dict[str, Any] = {}
        ttft: dict[str, int] = {}
        for name, channel in studio.channels.items():
            desk = studio.desks.desk(name)
            log = self._logs.get(name)
            channels[name] = {
                "answers": log.records() if log is not None else [],
                "chat_queue": chat_queue(desk) if desk is not None else None,
                "chat_waiting": len(desk.queue) if desk is not None else 0,
                "chat_paused": desk.paused if desk is not None else None,
                "lipsync_deadline_misses": int(keys.get(name, {}).get("deadline_misses", 0)),
            }
            for value, count in channel.conversation.ttft_observed.items():
                key = str(round(value * 1000))
                ttft[key] = ttft.get(key, 0) + count
        return {
            "pid": os.getpid(),
            "cpu_s": round(time.process_time(), 3),
            "channels": channels,
            "render": {
                "call_sizes": {str(k): int(v) for k, v in tensor.get("call_sizes", {}).items()},
                "calls": int(tensor.get("calls", 0)),
                "frames": int(tensor.get("frames", 0)),
                "render_seconds": float(tensor.get("render_seconds", 0.0)),
            },
            "ttft_ms": ttft,
            "llm_ready": studio.llm is not None,
        }

    async def thumbnail(self, name: str) -> bytes | None:
        """The channel's latest picture as a small JPEG (None: not on air here, or no frame yet)."""
        channel = self.studio.channels.get(name)
        if channel is None:
            return None
        return await self.thumbnails.get(name, channel.media.tap)
