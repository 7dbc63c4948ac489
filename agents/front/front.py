"""The front: what the studio is from the outside, whatever number of worker processes runs it.

It owns the one public port's state (which channel runs where), the chat connection (IRC), the
OBS link and the processes it supervises; the channels themselves run in media workers. With
`server.workers: 1` the one worker is a Studio in this process; with more, each is a process
(remote.py) restarted when it dies, its channels put back on air. A new channel goes to the
worker with the most measured headroom; a refused one is offered to the next.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from agents.chat.messages import IRCLine
from agents.chat.router import ChatRouter
from agents.config import ChannelConfig, LLMConfig, StudioConfig
from agents.front.links import LocalWorker, WorkerGone, WorkerLink
from agents.front.obs_setup import channel_sources, obs_link
from agents.front.placement import describe, shared_asr, shared_renderer, voices_in_service, worker_count
from agents.front.services import ServiceProcess
from agents.worker.admission import AdmissionRefused
from agents.worker.studio import Studio, StudioError
from stream.clock import Clock
from stream.obs import ObsLink
from stream.webrtc import restrict_host_candidates

log = logging.getLogger(__name__)


def checkpoint_problems(cfg: StudioConfig) -> list[str]:
    """The neural lip-sync checkpoint, loaded once on the CPU before any process starts: a wrong file is
    a config error at start, with what is missing and which architecture it looks like."""
    if cfg.lipsync.model == "none" or not cfg.lipsync.checkpoint:
        return []
    from models.lipsync.wav2lip_checkpoint import CheckpointError, load_wav2lip

    try:
        load_wav2lip(cfg.lipsync.checkpoint, cfg.lipsync.model, "cpu")  # type: ignore[arg-type]
    except CheckpointError as exc:
        return [f"lipsync.checkpoint: {exc}"]
    return []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def headroom(capacity: dict[str, float]) -> float:
    """A worker's free share of its tightest budget (1: idle, <= 0: full), from its admission numbers."""
    free = [1 - capacity["cpu_used"] / capacity["cpu_limit"]] if capacity.get("cpu_limit") else [1.0]
    if capacity.get("render_limit") and not capacity.get("shared_renderer"):
        free.append(1 - capacity["render_used"] / capacity["render_limit"])
    return min(free)


class Front:
    def __init__(self, cfg: StudioConfig, *, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.workers: list[WorkerLink] = []
        self.where: dict[str, WorkerLink] = {}
        """Channel on air -> the worker that runs it."""
        self.configs: dict[str, ChannelConfig] = {}
        self.failed: dict[str, str] = {}
        """Configured or added channels that could not go on air, and why."""
        self.chat = ChatRouter(cfg, self.deliver_chat)
        self.obs: ObsLink | None = None
        self._obs_task: asyncio.Task[None] | None = None
        self._changing = asyncio.Lock()  # one channel added or removed at a time
        self.studio: Studio | None = None
        """The worker's studio when it runs in this process (one worker)."""
        self.runtime_dir: Path | None = None
        """Sockets, worker configs and helper logs (several workers); removed at the end."""
        self.services: dict[str, ServiceProcess] = {}
        """Supervised helper processes: "gpu" (the GPU service), "llm" (vLLM's server)."""
        self.worker_llm: LLMConfig | None = None

    # ------------------------------------------------------------------ start and stop
    async def start(self) -> None:
        """Start the workers and put every configured channel on air (those that fit)."""
        _, problems = describe(self.cfg)
        problems += await asyncio.to_thread(checkpoint_problems, self.cfg)
        if problems:
            raise StudioError("the studio cannot be placed:\n" + "\n".join(f"  {p}" for p in problems))
        restrict_host_candidates(self.cfg.server.host_candidates())
        count = worker_count(self.cfg.server.workers)
        if count == 1:
            self.studio = Studio(self.cfg, clock=self.clock)
            self.studio.post_chat = self.chat.post
            await self.studio.start()
            self.workers = [LocalWorker(self.studio)]
            self._adopt(self.workers[0], self.studio.channels, self.studio.failed)
        else:
            from agents.front.remote import start_workers

            self.runtime_dir = Path(tempfile.mkdtemp(prefix="avatarcast-"))
            os.chmod(self.runtime_dir, 0o700)  # the control sockets: only this user reaches them
            gpu_socket = await self._start_services()
            self.workers, on_air, failed = await start_workers(
                self, count, self.runtime_dir, self.cfg.channels, gpu_socket,
                asr_remote=shared_asr(self.cfg), voices_remote=voices_in_service(self.cfg),
            )  # fmt: skip
            for worker, names in on_air.items():
                self._adopt(worker, names, {})
            self.failed.update(failed)
        if self.cfg.channels and not self.where:
            reasons = "\n".join(f"  {name}: {why}" for name, why in self.failed.items())
            raise StudioError(f"no channel could go on air:\n{reasons}")
        for name in self.where:
            await self.chat.add(self.configs[name])

    async def _start_services(self) -> str | None:
        """With several workers: the GPU service (when it renders) and vLLM's server (when the LLM is
        vLLM), both supervised; -> the GPU service's socket, or None when workers render themselves."""
        from agents.front.services import GPU_READY_TIMEOUT_S, LLM_READY_TIMEOUT_S, gpu_service, llm_server

        assert self.runtime_dir is not None
        socket = None
        if shared_renderer(self.cfg):
            socket = str(self.runtime_dir / "gpu.sock")
            gpu = gpu_service(self.cfg, socket, with_asr=shared_asr(self.cfg), with_voices=voices_in_service(self.cfg))
            await gpu.start(GPU_READY_TIMEOUT_S)
            gpu.keep_alive(GPU_READY_TIMEOUT_S)
            self.services["gpu"] = gpu
        if self.cfg.llm.backend == "vllm":
            server, self.worker_llm = llm_server(self.cfg.llm, free_port(), self.runtime_dir / "vllm.log")
            server.keep_alive(LLM_READY_TIMEOUT_S)  # in the background: channels answer canned lines meanwhile
            self.services["llm"] = server
        return socket

    def worker_config(self) -> dict[str, Any]:
        """The config a worker process runs with: the front's, the LLM reached through its server."""
        cfg = self.cfg if self.worker_llm is None else self.cfg.model_copy(update={"llm": self.worker_llm})
        return cfg.model_dump(mode="json", exclude_none=True)

    def channels_on(self, worker: WorkerLink) -> list[ChannelConfig]:
        return [self.configs[name] for name, w in self.where.items() if w is worker]

    def post_chat(self, irc_channel: str, text: str) -> None:
        self.chat.post(irc_channel, text)

    def _adopt(self, worker: WorkerLink, names: Any, failed: dict[str, str]) -> None:
        by_name = {c.name: c for c in self.cfg.channels}
        for name in names:
            self.where[name] = worker
            self.configs[name] = by_name[name]
        self.failed.update(failed)

    def start_obs_link(self) -> None:
        """Keep the channels in OBS (obs.setup_at_start); once the web server serves their streams."""
        self.obs = obs_link(self.cfg, list(self.configs.values()))
        if self.obs is not None:
            self._obs_task = asyncio.create_task(self.obs.run(), name="obs-link")

    def _obs_follows(self) -> None:
        """OBS shows the channels on air: the link sets it up again at its next poll."""
        if self.obs is not None:
            self.obs.set_sources(channel_sources(self.cfg, list(self.configs.values())))

    async def aclose(self) -> None:
        if self._obs_task is not None:
            self._obs_task.cancel()
            await asyncio.gather(self._obs_task, return_exceptions=True)
        await self.chat.aclose()
        await asyncio.gather(*(w.aclose() for w in self.workers), return_exceptions=True)
        await asyncio.gather(*(s.aclose() for s in self.services.values()), return_exceptions=True)
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    # ------------------------------------------------------------------ channels
    def channel_config(self, name: str) -> ChannelConfig | None:
        return self.configs.get(name) if name in self.where else None

    async def add_channel(self, cfg: ChannelConfig) -> dict[str, Any]:
        """Put one more channel on air, on the worker with the most headroom -> its summary.

        Raises ValueError (already on air, a chat clash, a bad pack), AdmissionRefused (no worker has room)."""
        async with self._changing:
            if cfg.name in self.where:
                raise ValueError(f"channel {cfg.name!r} is already on air")
            self.chat.check_channel(cfg)
            refused: AdmissionRefused | None = None
            for worker in await self._by_headroom():
                try:
                    result = await worker.add_channel(cfg)
                except AdmissionRefused as exc:
                    refused = exc
                    continue
                self.where[cfg.name] = worker
                self.configs[cfg.name] = cfg
                self.failed.pop(cfg.name, None)
                await self.chat.add(cfg)
                self._obs_follows()
                log.info("channel %s on air on worker %d", cfg.name, worker.index)
                return result
            raise refused or AdmissionRefused("no worker is up to take the channel")

    async def _by_headroom(self) -> list[WorkerLink]:
        up = [w for w in self.workers if w.state == "up"]
        if len(up) < 2:
            return up
        healths = await asyncio.gather(*(w.health() for w in up), return_exceptions=True)
        room = {w.index: headroom(h["capacity"]) for w, h in zip(up, healths, strict=True) if isinstance(h, dict)}
        return sorted((w for w in up if w.index in room), key=lambda w: -room[w.index])

    async def remove_channel(self, name: str) -> None:
        async with self._changing:
            worker = self.where.pop(name)
            self.configs.pop(name, None)
            self.chat.remove(name)
            self._obs_follows()
        await worker.remove_channel(name)
        log.info("channel %s taken off air", name)

    async def pause(self, name: str, reason: str) -> dict[str, Any]:
        return await self.where[name].pause(name, reason)

    async def resume(self, name: str) -> dict[str, Any]:
        return await self.where[name].resume(name)

    def deliver_chat(self, name: str, line: IRCLine) -> None:
        worker = self.where.get(name)
        if worker is not None:
            worker.chat_line(name, line)

    # ------------------------------------------------------------------ state
    async def health(self) -> dict[str, Any]:
        """Every worker's channels (each naming its worker), what failed, capacity, chat and OBS."""
        healths = await asyncio.gather(*(w.health() for w in self.workers), return_exceptions=True)
        channels: dict[str, Any] = {}
        failed = dict(self.failed)
        workers = []
        for worker, h in zip(self.workers, healths, strict=True):
            entry: dict[str, Any] = {"index": worker.index, "pid": worker.pid, "state": worker.state}
            if isinstance(h, BaseException):
                entry["error"] = str(h) if not isinstance(h, WorkerGone) else "restarting"
                workers.append(entry)
                continue
            desks = h.get("chat", {})
            for name, stats in h["channels"].items():
                channels[name] = {**stats, "worker": {"index": worker.index, "pid": worker.pid}}
                if name in desks:  # its chat desk: the queue, what was answered and dropped
                    channels[name]["chat"] = desks[name]
            failed.update(h["failed"])
            workers.append({**entry, "channels": sorted(h["channels"]), "capacity": h["capacity"]})
        return {
            "channels": channels,
            "failed": failed,
            "capacity": _total_capacity([w["capacity"] for w in workers if "capacity" in w]),
            "workers": workers,
            "chat": self.chat.stats(),
            "obs": self.obs.info() if self.obs is not None else None,
            "services": {name: service.info() for name, service in self.services.items()},
        }


def _total_capacity(capacities: list[dict[str, float]]) -> dict[str, float]:
    """The workers' admission numbers added up (one worker: its own numbers)."""
    if len(capacities) == 1:
        return capacities[0]
    total: dict[str, float] = {}
    for capacity in capacities:
        for key, value in capacity.items():
            if key == "loop_lag_p95_ms":
                total[key] = max(total.get(key, 0.0), value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = round(total.get(key, 0.0) + value, 3)
    return total
