"""The studio: the shared model services and every channel that uses them.

One lip-sync service, one LLM engine, one ASR model and one loaded voice per distinct voice
config serve all channels, so N channels cost one model in memory and batched calls, not N.
The LLM loads in the background (it takes ~20 s on CPU): channels go on air at once and answer
from their cache and canned lines until it is ready.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path

from aiortc import RTCIceServer

from agents.channel import Channel
from agents.config import ChannelConfig, LLMConfig, StudioConfig, VoiceConfig
from models.lipsync.service import LipSyncService
from models.protocols import LLM
from models.tts_piper import PiperTTS
from stream.clock import Clock
from stream.webrtc import restrict_host_candidates

log = logging.getLogger(__name__)


def ice_servers(cfg: StudioConfig) -> list[RTCIceServer]:
    return [
        RTCIceServer(urls=s.urls, username=s.username, credential=s.credential.reveal() if s.credential else None)
        for s in cfg.server.ice_servers
    ]


async def load_llm(cfg: LLMConfig) -> LLM | None:
    """The configured LLM backend, loaded (None for backend none)."""
    if cfg.backend == "none":
        return None
    if cfg.backend == "openai":
        from models.llm_openai import OpenAICompatibleLLM

        key = cfg.api_key.reveal() if cfg.api_key else None
        return OpenAICompatibleLLM(cfg.base_url or "", cfg.model, key)
    from models.defaults import default_llm_dir

    # importing vLLM takes ~10 s of CPU: in a thread, or every channel's picture would stall meanwhile
    vllm_backend = await asyncio.to_thread(importlib.import_module, "models.llm_vllm")
    model_dir = default_llm_dir() if cfg.model == "builtin:smollm2" else Path(cfg.model)
    return await vllm_backend.VLLMEngine.start(
        model_dir, dtype=cfg.dtype, max_model_len=cfg.max_model_len, kv_cache_gib=cfg.kv_cache_gib
    )


class Studio:
    def __init__(self, cfg: StudioConfig, *, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.lipsync = LipSyncService(cfg.lipsync.device, max_batch=cfg.lipsync.max_batch)
        self.channels: dict[str, Channel] = {}
        self.llm: LLM | None = None
        self.asr: object | None = None
        self._voices: dict[tuple[str, int | None, float], PiperTTS] = {}
        self._llm_task: asyncio.Task[None] | None = None

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
            llm=lambda: self.llm,
            asr=self.asr,
            ice_servers=ice_servers(self.cfg),
            clock=self.clock,
        )
        await channel.prepare()
        return channel

    async def _load_asr(self) -> None:
        from models.asr_whisper import WhisperASR

        loop = asyncio.get_running_loop()
        asr = self.cfg.asr
        try:
            self.asr = await loop.run_in_executor(None, lambda: WhisperASR.load(asr.model, device=asr.device))
        except Exception as exc:
            log.error("speech recognition unavailable (%s); viewers can still type", exc)

    async def _load_llm(self) -> None:
        try:
            log.info("loading the LLM (%s, %s) in the background ...", self.cfg.llm.backend, self.cfg.llm.model)
            self.llm = await load_llm(self.cfg.llm)
            if self.llm is not None:
                log.info("LLM ready: channels answer with it from now on")
        except Exception as exc:
            log.error("LLM unavailable (%s): channels answer from their cache and canned lines", exc)

    async def start(self) -> None:
        """Load voices, ASR and avatars, put every channel on air, then bring up the LLM."""
        restrict_host_candidates(self.cfg.server.host_candidates())
        await self._load_asr()
        for cfg in self.cfg.channels:
            log.info("preparing channel %s ...", cfg.name)
            self.channels[cfg.name] = await self.build_channel(cfg)
        for channel in self.channels.values():
            await channel.start()
        self._llm_task = asyncio.create_task(self._load_llm(), name="llm-load")

    async def wait_for_llm(self) -> LLM | None:
        """Until the background LLM load is over (tests and benches wait here)."""
        if self._llm_task is not None:
            await self._llm_task
        return self.llm

    async def aclose(self) -> None:
        if self._llm_task is not None and not self._llm_task.done():
            self._llm_task.cancel()
        await asyncio.gather(*(c.aclose() for c in self.channels.values()), return_exceptions=True)
        await self.lipsync.aclose()
        aclose = getattr(self.llm, "aclose", None)
        if aclose is not None:
            await aclose()
