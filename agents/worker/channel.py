"""One avatar channel: its media half (face, Program, encoder, viewers) and its talking half (turns,
persona, memory, listening), joined only by the Program's timeline.

  chat / voice -> Conversation (TurnControl) -> answers (LLM -> clauses -> TTS) -> Program
  Program -> face renderer (lip-sync service, batched across channels) -> frames
  Program -> the channel's one encoder -> WebRTC viewers, RTMP, MP4
Program events say what actually aired; turns, memory and captions keep only that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiortc import RTCIceServer

from agents.config import ChannelConfig
from agents.conversation.conversation import Conversation
from agents.conversation.events import EventHub
from agents.worker.media import ChannelMedia
from models.protocols import ASR, LLM, TTS, LipSync, PreparedFace
from stream.clock import Clock, VideoFormat
from stream.encoder import ChannelEncoder
from stream.program import Program


class Channel:
    def __init__(
        self,
        cfg: ChannelConfig,
        *,
        lipsync: LipSync,
        tts: TTS,
        llm: Callable[[], LLM | None] = lambda: None,
        asr: ASR | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.conversation = Conversation(cfg, tts=tts, llm=llm, asr=asr)
        listener = self.conversation.listener
        self.media = ChannelMedia(
            cfg,
            lipsync=lipsync,
            ice_servers=ice_servers,
            clock=clock,
            on_mic=listener.push if listener else None,
            on_leave=listener.forget if listener else None,
        )

    # the parts every caller reaches for
    @property
    def fmt(self) -> VideoFormat:
        return self.media.fmt

    @property
    def program(self) -> Program | None:
        return self.media.program

    @property
    def encoder(self) -> ChannelEncoder:
        return self.media.encoder

    @property
    def face(self) -> PreparedFace | None:
        return self.media.face

    @property
    def events(self) -> EventHub:
        return self.conversation.events

    async def prepare(self) -> None:
        """Load the avatar, build the Program, and make the conversation speak on it."""
        program = await self.media.prepare()
        await self.conversation.attach(program, self.fmt.fps)

    async def start(self) -> None:
        """Go on air: the program runs (idle) until the channel is closed; the greeting is said."""
        if self.program is None:
            await self.prepare()
        self.media.start()
        if self.cfg.greeting:
            self.conversation.start_turn("say", self.cfg.greeting, source="system")

    def info(self) -> dict[str, Any]:
        """What a viewer page needs to know (nothing secret)."""
        return {
            "name": self.name,
            "title": self.cfg.display_title,
            **self.media.info(),
            "max_chat_chars": self.cfg.max_chat_chars,
            "chat": self.cfg.conversation.chat,
            "listening": self.conversation.listener is not None,
        }

    def stats(self) -> dict[str, Any]:
        return {**self.media.stats(), **self.conversation.stats()}

    async def aclose(self) -> None:
        await self.media.webrtc.aclose()  # viewers first: their mics feed the conversation
        await self.conversation.aclose()
        await self.media.aclose()
