"""Admission control: a channel goes on air only if the box can still hold every channel's frame rate.

Each channel is priced when it is prepared, by measuring it: the seconds the lip-sync renderer
takes per frame of its face (at a typical batch) and the seconds its encoder takes per frame.
Its demand is that times its frame rate, in CPU seconds per second. The renderer is one thread
(so all channels' rendering must fit in one core), and rendering plus encoding must fit in the
machine's cores, each kept below `max_utilisation` so bursts (speech, viewers joining, ASR) do not
push running channels below their frame rate. A loop already lagging refuses new channels too.
Refusals say which budget is short, by how much, and what to change.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.supervisor import cancel_and_wait


class AdmissionRefused(RuntimeError):
    """Adding the channel would push the running ones below their frame rate; str() says why."""


@dataclass(frozen=True, slots=True)
class Demand:
    """What one channel costs, measured."""

    name: str
    fps: int
    render_s: float  # renderer seconds per frame
    encode_s: float  # encoder seconds per frame

    @property
    def render_load(self) -> float:
        return self.fps * self.render_s

    @property
    def cpu_load(self) -> float:
        return self.fps * (self.render_s + self.encode_s)


class LoopLag:
    """How late the event loop wakes up (a sleep of `interval_s` that takes longer), recent p95."""

    def __init__(self, interval_s: float = 0.1, keep: int = 30) -> None:
        self.interval_s = interval_s
        self._lags: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval_s)
            self._lags.append(max(0.0, loop.time() - t0 - self.interval_s))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self._lags, 95)) * 1000 if self._lags else 0.0

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)


class Admission:
    """`shared_renderer`: frames are drawn by the GPU service process, not here; this worker then
    budgets its encoders and loop only, and the front budgets the shared renderer across workers."""

    def __init__(
        self, *, max_utilisation: float, max_loop_lag_ms: float, cores: int | None = None, shared_renderer: bool = False
    ) -> None:
        self.max_utilisation = max_utilisation
        self.max_loop_lag_ms = max_loop_lag_ms
        self.cores = cores or len(os.sched_getaffinity(0))
        self.shared_renderer = shared_renderer
        self.lag = LoopLag()

    def _cpu(self, d: Demand) -> float:
        return d.fps * d.encode_s if self.shared_renderer else d.cpu_load

    def budgets(self, running: list[Demand]) -> dict[str, Any]:
        """What is used and what is allowed, in CPU seconds per second (for /healthz and preflight)."""
        return {
            "render_used": round(sum(d.render_load for d in running), 3),
            "render_limit": round(self.max_utilisation, 3),
            "cpu_used": round(sum(self._cpu(d) for d in running), 3),
            "cpu_limit": round(self.max_utilisation * self.cores, 3),
            "loop_lag_p95_ms": round(self.lag.p95_ms, 1),
            "shared_renderer": self.shared_renderer,
        }

    def check(self, new: Demand, running: list[Demand], lag_ms: float) -> None:
        """Raise AdmissionRefused when `new` does not fit next to `running` (the loop `lag_ms` late)."""
        render = sum(d.render_load for d in running) + new.render_load
        cpu = sum(self._cpu(d) for d in [*running, new])
        fix = "fix: a smaller video size or frame rate for it, fewer channels, or a GPU (lipsync.device: cuda)"
        if render > self.max_utilisation and not self.shared_renderer:
            raise AdmissionRefused(
                f"channel {new.name} needs {new.render_load * 1000:.0f} ms of face rendering per second "
                f"({new.render_s * 1000:.1f} ms a frame at {new.fps} fps); the renderer would be "
                f"{render:.0%} busy, over its {self.max_utilisation:.0%} limit with {len(running)} channels "
                f"running; {fix}"
            )
        if cpu > self.max_utilisation * self.cores:
            raise AdmissionRefused(
                f"channel {new.name} needs {self._cpu(new):.2f} CPU s/s; the studio would use "
                f"{cpu:.2f} of its {self.max_utilisation * self.cores:.2f} on {self.cores} cores; {fix}"
            )
        if running and lag_ms > self.max_loop_lag_ms:
            raise AdmissionRefused(
                f"the event loop already runs {lag_ms:.0f} ms late (p95; limit "
                f"{self.max_loop_lag_ms:.0f} ms): the running channels are at their limit; fix: fewer channels here"
            )
