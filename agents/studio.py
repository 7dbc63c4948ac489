"""The studio: the shared model services and every channel that uses them.

One lip-sync service, one LLM engine, one ASR model and one loaded voice per distinct voice
config serve all channels, so N channels cost one model in memory and batched calls, not N.
The LLM loads in the background (it takes ~20 s on CPU): channels go on air at once and answer
from their cache and canned lines until it is ready.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
from pathlib import Path

import cv2
import torch
from aiortc import RTCIceServer

from agents.admission import Admission, AdmissionRefused, Demand, measure_demand
from agents.channel import Channel
from agents.chat.studio_chat import StudioChat
from agents.config import ChannelConfig, LLMConfig, StudioConfig, VoiceConfig
from agents.obs_setup import channel_sources, obs_link
from models.avatars import PackError
from models.lipsync.service import LipSyncService
from models.protocols import LLM
from models.tts_service import TTSService, Voice
from stream.clock import Clock
from stream.encoder import encode_cost_s
from stream.obs import ObsLink
from stream.webrtc import restrict_host_candidates

log = logging.getLogger(__name__)


class StudioError(RuntimeError):
    """The studio cannot go on air at all; str() lists every reason."""


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


def freeze_heap(why: str) -> None:
    """Take every object alive now (modules, models: ~700k with vLLM and torch loaded) out of the
    garbage collector's sight. A full collection over them holds the GIL ~0.3 s here (0.5 s under
    load) and every channel in the process misses its frames at once; what was loaded to run is
    never garbage, and later objects are still collected."""
    gc.freeze()
    log.info("heap frozen once %s (%d objects kept out of full collections)", why, gc.get_freeze_count())


class Studio:
    def __init__(self, cfg: StudioConfig, *, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.lipsync = LipSyncService(
            cfg.lipsync.device, max_batch=cfg.lipsync.max_batch, sprite_kernel=cfg.lipsync.kernel
        )
        if self.lipsync.device.type == "cpu":  # torch's and OpenCV's defaults take every core: fights encoders
            threads = cfg.lipsync.cpu_threads or max(1, len(os.sched_getaffinity(0)) // 2)
            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
        self.admission = Admission(
            max_utilisation=cfg.admission.max_utilisation, max_loop_lag_ms=cfg.admission.max_loop_lag_ms
        )
        self.channels: dict[str, Channel] = {}
        self.demands: dict[str, Demand] = {}
        self.failed: dict[str, str] = {}
        """Configured channels that could not go on air, and why (shown by /healthz and the admin API)."""
        self.llm: LLM | None = None
        self.asr: object | None = None
        self.tts = TTSService()
        """Every channel's sentences, by one worker, by deadline and fairly; each voice loaded once."""
        self._llm_task: asyncio.Task[None] | None = None
        self.obs: ObsLink | None = None
        self._obs_task: asyncio.Task[None] | None = None
        self.chat: StudioChat | None = None
        """The studio's chat: one IRC connection and a desk per channel with a chat: section."""
        self._changing = asyncio.Lock()  # one channel added or removed at a time

    async def voice(self, cfg: VoiceConfig) -> Voice:
        model = None if cfg.model == "builtin:joe" else Path(cfg.model)
        return await self.tts.voice(
            model, speaker=cfg.speaker, length_scale=cfg.length_scale, backend=cfg.backend, language=cfg.language
        )

    async def build_channel(self, cfg: ChannelConfig, *, starting: bool = False) -> Channel:
        """A prepared channel that fits next to the running ones (raises AdmissionRefused if not).

        While the studio starts, the event loop's lag says nothing about capacity (the model loading
        in threads causes it), so only the measured render and encode budgets decide then.
        """
        channel = Channel(
            cfg,
            lipsync=self.lipsync,
            tts=self.tts.channel(cfg.name, await self.voice(cfg.voice)),
            llm=lambda: self.llm,
            asr=self.asr,
            ice_servers=ice_servers(self.cfg),
            clock=self.clock,
        )
        lag_ms = 0.0 if starting else self.admission.lag.p95_ms  # before preparing: that makes the loop late
        try:
            await channel.prepare()
            assert channel.face is not None
            face, fmt, bitrate = channel.face, channel.fmt, cfg.video.bitrate_kbps * 1000
            demand = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: measure_demand(
                    cfg.name, fmt.fps, self.lipsync, face, encode_cost_s(fmt, face.still, bitrate=bitrate)
                ),
            )
            self.admission.check(demand, list(self.demands.values()), lag_ms)
        except BaseException:
            await channel.aclose()
            raise
        self.demands[cfg.name] = demand
        return channel

    async def add_channel(self, cfg: ChannelConfig, *, starting: bool = False) -> Channel:
        """Put one more channel on air while the others run (the admin API, and start-up)."""
        async with self._changing:
            if cfg.name in self.channels:
                raise ValueError(f"channel {cfg.name!r} is already on air")
            if self.chat is not None:
                self.chat.check_channel(cfg)
            log.info("preparing channel %s ...", cfg.name)
            channel = await self.build_channel(cfg, starting=starting)
            self.channels[cfg.name] = channel
            self.failed.pop(cfg.name, None)
            await channel.start()
            if self.chat is not None:
                await self.chat.add_channel(channel)
            self._obs_follows()
            return channel

    def _obs_follows(self) -> None:
        """OBS shows the channels on air: the link sets it up again at its next poll."""
        if self.obs is not None:
            self.obs.set_sources(channel_sources(self.cfg, [c.cfg for c in self.channels.values()]))

    async def remove_channel(self, name: str) -> None:
        async with self._changing:
            channel = self.channels.pop(name)
            self.demands.pop(name, None)
            if self.chat is not None:
                await self.chat.remove_channel(name)
            self._obs_follows()
        await channel.aclose()
        self.tts.forget(name)
        self.lipsync.batcher.forget(name)
        log.info("channel %s taken off air", name)

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
                freeze_heap("the LLM loaded")
                log.info("LLM ready: channels answer with it from now on")
        except Exception as exc:
            log.error("LLM unavailable (%s): channels answer from their cache and canned lines", exc)

    async def start(self) -> None:
        """Load voices, ASR and avatars, put every channel that fits on air, then bring up the LLM.

        A channel that cannot go on air (a broken avatar, no headroom left) is reported and skipped:
        it must not keep the others off air. If none can, start fails with every reason.
        """
        restrict_host_candidates(self.cfg.server.host_candidates())
        self.admission.lag.start()
        await self._load_asr()
        for cfg in self.cfg.channels:
            try:
                await self.add_channel(cfg, starting=True)
            except (AdmissionRefused, PackError, OSError, ValueError, RuntimeError) as exc:
                self.failed[cfg.name] = str(exc)
                log.error("channel %s stays off air: %s", cfg.name, exc)
        if not self.channels:
            reasons = "\n".join(f"  {name}: {why}" for name, why in self.failed.items())
            raise StudioError(f"no channel could go on air:\n{reasons}")
        self.chat = StudioChat(self.cfg, self.channels)
        await self.chat.start()
        freeze_heap("the channels went on air")
        self._llm_task = asyncio.create_task(self._load_llm(), name="llm-load")

    def start_obs_link(self) -> None:
        """Keep the channels in OBS (obs.setup_at_start); once the web server serves their streams."""
        self.obs = obs_link(self.cfg, [c.cfg for c in self.channels.values()])
        if self.obs is not None:
            self._obs_task = asyncio.create_task(self.obs.run(), name="obs-link")

    def health(self) -> dict[str, object]:
        return {
            "channels": {name: c.stats() for name, c in self.channels.items()},
            "failed": dict(self.failed),
            "capacity": self.admission.budgets(list(self.demands.values())),
            "chat": self.chat.stats() if self.chat is not None else None,
            "obs": self.obs.info() if self.obs is not None else None,
        }

    async def wait_for_llm(self) -> LLM | None:
        """Until the background LLM load is over (tests and benches wait here)."""
        if self._llm_task is not None:
            await self._llm_task
        return self.llm

    async def aclose(self) -> None:
        if self._obs_task is not None:
            self._obs_task.cancel()
            await asyncio.gather(self._obs_task, return_exceptions=True)
        if self.chat is not None:
            await self.chat.aclose()
        if self._llm_task is not None and not self._llm_task.done():
            self._llm_task.cancel()
        await asyncio.gather(*(c.aclose() for c in self.channels.values()), return_exceptions=True)
        await self.admission.lag.aclose()
        await self.lipsync.aclose()
        await self.tts.aclose()
        aclose = getattr(self.llm, "aclose", None)
        if aclose is not None:
            await aclose()
