"""The studio: the shared model services and every channel that uses them.

One lip-sync service and one loaded voice per distinct voice config serve all channels, so N
channels cost one model in memory and batched calls, not N copies.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiortc import RTCIceServer

from agents.channel import Channel
from agents.config import ChannelConfig, StudioConfig, VoiceConfig
from models.lipsync.service import LipSyncService
from models.tts_piper import PiperTTS
from stream.clock import Clock
from stream.webrtc import restrict_host_candidates

log = logging.getLogger(__name__)


def ice_servers(cfg: StudioConfig) -> list[RTCIceServer]:
    return [
        RTCIceServer(urls=s.urls, username=s.username, credential=s.credential.reveal() if s.credential else None)
        for s in cfg.server.ice_servers
    ]


class Studio:
    def __init__(self, cfg: StudioConfig, *, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.lipsync = LipSyncService(cfg.lipsync.device, max_batch=cfg.lipsync.max_batch)
        self.channels: dict[str, Channel] = {}
        self._voices: dict[tuple[str, int | None, float], PiperTTS] = {}

    async def voice(self, cfg: VoiceConfig) -> PiperTTS:
        key = (cfg.model, cfg.speaker, cfg.length_scale)
        if key not in self._voices:
            model = None if cfg.model == "builtin:joe" else Path(cfg.model)
            loop = asyncio.get_running_loop()
            self._voices[key] = await loop.run_in_executor(
                None, lambda: PiperTTS.load(model, speaker=cfg.speaker, length_scale=cfg.length_scale)
            )
        return self._voices[key]

    async def build_channel(self, cfg: ChannelConfig) -> Channel:
        channel = Channel(
            cfg,
            lipsync=self.lipsync,
            tts=await self.voice(cfg.voice),
            ice_servers=ice_servers(self.cfg),
            clock=self.clock,
        )
        await channel.prepare()
        return channel

    async def start(self) -> None:
        """Load every channel's voice and avatar, then put them all on air."""
        restrict_host_candidates(self.cfg.server.host_candidates())
        for cfg in self.cfg.channels:
            log.info("preparing channel %s ...", cfg.name)
            self.channels[cfg.name] = await self.build_channel(cfg)
        for channel in self.channels.values():
            await channel.start()

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.channels.values()), return_exceptions=True)
        await self.lipsync.aclose()
