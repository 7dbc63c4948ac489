"""A worker's studio: the channels on air in this process and the model services they share.

One lip-sync service, one LLM client or engine, one ASR model and one loaded voice per distinct
voice config serve all of this process's channels, so N channels cost one model in memory and
batched calls, not N. The LLM loads in the background (it takes ~20 s on CPU): channels go on air
at once and answer from their cache and canned lines until it is ready. With several workers the
front places channels here by measured headroom and the lip-sync service may be the GPU service
process's (models/lipsync/remote.py); everything else is the same.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import torch
from aiortc import RTCIceServer

from agents.chat.desks import ChannelDesks
from agents.config import ChannelConfig, LLMConfig, StudioConfig, VoiceConfig
from agents.worker.admission import Admission, Demand
from agents.worker.channel import Channel
from models.lipsync.service import LipSyncService, NeuralModel
from models.protocols import ASR, LLM, LipSync
from models.tts_service import TTSService, Voice
from stream.clock import Clock
from stream.encoder import encode_cost_s

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
        model_dir,
        dtype=cfg.dtype,
        max_model_len=cfg.max_model_len,
        kv_cache_gib=cfg.kv_cache_gib,
        max_num_seqs=cfg.max_num_seqs,
        quantization=cfg.quantization,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size,
        enable_prefix_caching=cfg.enable_prefix_caching,
        device_env=cfg.device_env(),
    )


def local_lipsync(cfg: StudioConfig) -> LipSyncService:
    """Lip-sync rendered in this process, on the configured device (a wrong checkpoint fails here:
    models.lipsync.wav2lip_checkpoint.CheckpointError, a ValueError saying what the file is)."""
    ls = cfg.lipsync
    neural = NeuralModel(ls.model, Path(ls.checkpoint)) if ls.model != "none" and ls.checkpoint else None
    service = LipSyncService(ls.device, max_batch=ls.max_batch, sprite_kernel=ls.kernel, neural=neural)
    if service.device.type == "cpu":  # torch's and OpenCV's defaults take every core: fights encoders
        threads = cfg.lipsync.cpu_threads or max(1, len(os.sched_getaffinity(0)) // 2)
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    return service


def freeze_heap(why: str) -> None:
    """Take every object alive now (modules, models: ~700k with vLLM and torch loaded) out of the
    garbage collector's sight. A full collection over them holds the GIL ~0.3 s here (0.5 s under
    load) and every channel in the process misses its frames at once; what was loaded to run is
    never garbage, and later objects are still collected."""
    gc.freeze()
    log.info("heap frozen once %s (%d objects kept out of full collections)", why, gc.get_freeze_count())


class Studio:
    def __init__(
        self,
        cfg: StudioConfig,
        *,
        clock: Clock | None = None,
        lipsync: LipSync | None = None,
        cores: int | None = None,
        asr_socket: str | None = None,
        voice_socket: str | None = None,
    ) -> None:
        """`lipsync`: the GPU service's client (default: render here); `cores`: this worker's share of
        the machine's cores, which admission budgets (default: all of them); `asr_socket`: the GPU
        service runs Whisper for every worker (default: load it here); `voice_socket`: it speaks the
        voices tts.process places there."""
        self.asr_socket = asr_socket
        self.voice_socket = voice_socket
        self._remote_voices: dict[tuple[Any, ...], Voice] = {}
        self.cfg = cfg
        self.clock = clock
        self.lipsync: LipSync = lipsync or local_lipsync(cfg)
        self.admission = Admission(
            max_utilisation=cfg.admission.max_utilisation,
            max_loop_lag_ms=cfg.admission.max_loop_lag_ms,
            cores=cores,
            shared_renderer=lipsync is not None,
        )
        self.channels: dict[str, Channel] = {}
        self.demands: dict[str, Demand] = {}
        self.failed: dict[str, str] = {}
        """Channels that could not go on air here, and why (shown by /healthz and the admin API)."""
        self.llm: LLM | None = None
        self.asr: ASR | None = None
        self.tts = TTSService()
        """Every channel's sentences, by one worker, by deadline and fairly; each voice loaded once."""
        self._llm_task: asyncio.Task[None] | None = None
        self.desks = ChannelDesks(cfg)
        """Chat desks of the channels that have a chat: section."""
        self._changing = asyncio.Lock()  # one channel added or removed at a time

    @property
    def post_chat(self) -> Callable[[str, str], None] | None:
        return self.desks.post

    @post_chat.setter
    def post_chat(self, post: Callable[[str, str], None] | None) -> None:
        """Where a desk's lines for IRC go: (IRC channel, text) -> the front's IRC connection."""
        self.desks.post = post

    async def voice(self, cfg: VoiceConfig) -> Voice:
        model = None if cfg.model == "builtin:joe" else Path(cfg.model)
        if self.voice_socket is not None and self.cfg.tts.in_service(cfg.backend):
            return await self._remote_voice(cfg, model)
        return await self.tts.voice(
            model, speaker=cfg.speaker, length_scale=cfg.length_scale, backend=cfg.backend, language=cfg.language
        )

    async def _remote_voice(self, cfg: VoiceConfig, model: Path | None) -> Voice:
        """The voice, speaking in the GPU service (loaded there once for every worker)."""
        from models.tts_remote import RemoteVoice
        from models.tts_service import load_voice

        key = {"backend": cfg.backend, "model": str(model) if model else None, "speaker": cfg.speaker,
               "length_scale": cfg.length_scale, "language": cfg.language}  # fmt: skip
        ident = tuple(key.values())
        if ident not in self._remote_voices:

            def here() -> Voice:  # while the service is away: the same voice on this CPU
                return load_voice(cfg.backend, model, speaker=cfg.speaker, length_scale=cfg.length_scale,
                                  language=cfg.language)  # fmt: skip

            assert self.voice_socket is not None
            self._remote_voices[ident] = await asyncio.to_thread(RemoteVoice.open, self.voice_socket, key, here)
        return self._remote_voices[ident]

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
            encode_s = await asyncio.to_thread(encode_cost_s, fmt, face.still, bitrate=bitrate)
            demand = Demand(cfg.name, fmt.fps, await self.lipsync.frame_cost(face), encode_s)
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
            log.info("preparing channel %s ...", cfg.name)
            channel = await self.build_channel(cfg, starting=starting)
            self.channels[cfg.name] = channel
            self.failed.pop(cfg.name, None)
            await channel.start()
            self.desks.open(channel)
            return channel

    async def remove_channel(self, name: str) -> None:
        async with self._changing:
            channel = self.channels.pop(name)
            self.demands.pop(name, None)
            await self.desks.close(name)
        await channel.aclose()
        self.tts.forget(name)
        self.lipsync.forget(name)
        log.info("channel %s taken off air", name)

    async def _load_asr(self) -> None:
        from models.asr_whisper import WhisperASR

        loop = asyncio.get_running_loop()
        asr = self.cfg.asr
        try:
            if self.asr_socket is not None:
                from models.asr_remote import RemoteASR

                def on_cpu() -> ASR:
                    return WhisperASR.load(asr.model, device="cpu", language=asr.language)

                self.asr = await RemoteASR.connect(self.asr_socket, fallback=on_cpu)
                return
            self.asr = await loop.run_in_executor(
                None, lambda: WhisperASR.load(asr.model, device=asr.device, language=asr.language)
            )
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

    async def start(self, channels: list[ChannelConfig] | None = None) -> None:
        """Load ASR and the voices, put `channels` (default: the config's) on air, then bring up the LLM.

        A channel that cannot go on air (a broken avatar, no headroom left) is reported and skipped:
        it must not keep the others off air. If none of them can, start fails with every reason.
        """
        self.admission.lag.start()
        await self._load_asr()
        wanted = self.cfg.channels if channels is None else channels
        for cfg in wanted:
            try:
                await self.add_channel(cfg, starting=True)
            except Exception as exc:
                self.failed[cfg.name] = str(exc)
                log.error("channel %s stays off air: %s", cfg.name, exc)
        if wanted and not self.channels:
            reasons = "\n".join(f"  {name}: {why}" for name, why in self.failed.items())
            raise StudioError(f"no channel could go on air:\n{reasons}")
        freeze_heap("the channels went on air")
        self._llm_task = asyncio.create_task(self._load_llm(), name="llm-load")

    def summary(self, name: str) -> dict[str, Any]:
        """A channel's admin summary: its state and stats."""
        channel = self.channels[name]
        return {"name": name, "state": "paused" if channel.conversation.paused else "on_air", **channel.stats()}

    def health(self) -> dict[str, Any]:
        return {
            "channels": {name: c.stats() for name, c in self.channels.items()},
            "failed": dict(self.failed),
            "capacity": self.admission.budgets(list(self.demands.values())),
            "chat": self.desks.stats(),
            "llm_ready": self.llm is not None,
        }

    async def wait_for_llm(self) -> LLM | None:
        """Until the background LLM load is over (tests and benches wait here)."""
        if self._llm_task is not None:
            await self._llm_task
        return self.llm

    async def aclose(self) -> None:
        await self.desks.aclose()
        if self._llm_task is not None and not self._llm_task.done():
            self._llm_task.cancel()
        await asyncio.gather(*(c.aclose() for c in self.channels.values()), return_exceptions=True)
        await self.admission.lag.aclose()
        await self.lipsync.aclose()
        await self.tts.aclose()
        aclose = getattr(self.llm, "aclose", None)
        if aclose is not None:
            await aclose()
        if self.asr is not None:
            self.asr.close()
