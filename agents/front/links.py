"""The front's handle on one media worker: the same calls whether it runs in this process or another.

LocalWorker drives a Studio in the front's own process (`server.workers: 1`, today's single
process); RemoteWorker (remote.py) drives a worker process over its control socket. The front
places channels, pauses them, reads health and metrics, and hands them chat through these calls
and nothing else.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from agents.chat.messages import IRCLine
from agents.config import ChannelConfig
from agents.worker import control
from agents.worker.metrics import StudioCollector, to_wire
from agents.worker.studio import Studio
from agents.worker.telemetry import StudioTelemetry


class WorkerGone(RuntimeError):
    """The worker process is not there (restarting, or stopped); the call can be made again later."""


class WorkerLink(Protocol):
    index: int

    @property
    def pid(self) -> int: ...

    @property
    def state(self) -> str:
        """starting | up | restarting | stopped"""
        ...

    async def add_channel(self, cfg: ChannelConfig) -> dict[str, Any]:
        """Put `cfg` on air there -> its summary. Raises AdmissionRefused (no headroom), ValueError or
        PackError (a bad channel; the message says what to fix), WorkerGone."""
        ...

    async def remove_channel(self, name: str) -> None: ...

    async def pause(self, name: str, reason: str) -> dict[str, Any]: ...

    async def resume(self, name: str) -> dict[str, Any]: ...

    async def health(self) -> dict[str, Any]:
        """Studio.health() of the worker: channels' stats, failed, capacity, chat."""
        ...

    async def metrics(self) -> list[dict[str, Any]]:
        """The worker's metric families as plain data (agents/worker/metrics.py to_wire)."""
        ...

    def chat_line(self, name: str, line: IRCLine) -> None:
        """An IRC line for channel `name`'s chat desk."""
        ...

    async def telemetry(self) -> dict[str, Any]:
        """What the studio page shows beyond health(): answers, chat queues, batch sizes, CPU seconds
        (agents/worker/telemetry.py StudioTelemetry.snapshot)."""
        ...

    async def thumbnail(self, name: str) -> bytes | None:
        """The channel's latest picture as a small JPEG (None: no frame yet, or not on air there)."""
        ...

    async def skip(self, name: str) -> list[str]:
        """Stop what the channel says and the turns queued behind it -> their ids."""
        ...

    async def say(self, name: str, text: str) -> str:
        """The channel says `text` -> its turn id. Raises ValueError, ChannelPaused, ChannelBusy."""
        ...

    async def aclose(self) -> None: ...


class LocalWorker:
    """A worker in the front's own process."""

    def __init__(self, studio: Studio, index: int = 0) -> None:
        self.studio = studio
        self.index = index
        self._collector = StudioCollector(studio)
        self._telemetry = StudioTelemetry(studio)

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def state(self) -> str:
        return "up"

    async def add_channel(self, cfg: ChannelConfig) -> dict[str, Any]:
        await self.studio.add_channel(cfg)
        return self.studio.summary(cfg.name)

    async def remove_channel(self, name: str) -> None:
        await self.studio.remove_channel(name)

    async def pause(self, name: str, reason: str) -> dict[str, Any]:
        self.studio.channels[name].conversation.pause(reason)
        return self.studio.summary(name)

    async def resume(self, name: str) -> dict[str, Any]:
        self.studio.channels[name].conversation.resume()
        return self.studio.summary(name)

    async def health(self) -> dict[str, Any]:
        return self.studio.health()

    async def metrics(self) -> list[dict[str, Any]]:
        return to_wire(self._collector.collect())

    def chat_line(self, name: str, line: IRCLine) -> None:
        self.studio.desks.line(name, line)

    async def telemetry(self) -> dict[str, Any]:
        return self._telemetry.snapshot()

    async def thumbnail(self, name: str) -> bytes | None:
        return await self._telemetry.thumbnail(name)

    async def skip(self, name: str) -> list[str]:
        return control.skip(self.studio.channels[name])

    async def say(self, name: str, text: str) -> str:
        return control.say(self.studio.channels[name], text)

    async def aclose(self) -> None:
        await self.studio.aclose()
