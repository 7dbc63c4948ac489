"""The studio page's live feed: one sample a second of every worker, kept as history and pushed to pages.

The sampler runs for as long as the front serves, whether or not a page watches, so the plots
have the hour behind them when someone opens the page. Each sample reads front.health() (every
worker's channels, capacity, chat, OBS) and each worker's telemetry (answers, chat queues, render
batches, CPU seconds), adds them to the history and makes the page's state from them; every page
connected over SSE gets it. A page that reads slowly gets the newest state only (a queue of one
per page: newest wins), and at most MAX_PAGES pages are fed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any

import numpy as np

from agents.front.front import Front
from agents.front.history import StudioHistory
from agents.front.machine import MachineUse
from agents.supervisor import cancel_and_wait

log = logging.getLogger(__name__)

SAMPLE_S = 1.0
MAX_PAGES = 32
ANSWERS_SHOWN = 6
"""The last answers listed on a channel's card."""
RECENT_ANSWERS = 20
"""The history's newest answers sent with every sample: a page that missed a sample still gets them."""
AV_OFFSET_KEY = "av_offset_measured_ms"
"""The A/V offset in a channel's health stats, measured as its viewers' packets leave (what their RTCP
sender reports tell them: stream/send_timing.py); None, shown as "not measured yet", without viewers.
Never derived from the Program's own positions, which cannot show drift."""


def channels_left(capacity: dict[str, Any], on_air: int) -> int | None:
    """How many more channels like the average one fit in the admission budgets (None: none on air).

    From admission's own numbers: each budget's room (limit - used) divided by what one channel
    uses of it on average (used / channels); the tightest budget decides."""
    if on_air <= 0:
        return None
    rooms = []
    pairs = [("cpu_used", "cpu_limit")]
    if not capacity.get("shared_renderer"):
        pairs.append(("render_used", "render_limit"))
    for used_key, limit_key in pairs:
        used, limit = float(capacity.get(used_key, 0.0)), float(capacity.get(limit_key, 0.0))
        if used > 0 and limit > 0:
            rooms.append(max(0.0, limit - used) / (used / on_air))
    return math.floor(min(rooms)) if rooms else None


def batch_histogram(renders: dict[int, dict[str, Any]], shared: bool) -> dict[str, int]:
    """Render calls by batch size since start. Workers drawing their own frames add up; with one GPU
    service every worker reports the service's numbers, so the one with most calls is taken alone."""
    if not renders:
        return {}
    if shared:
        top = max(renders.values(), key=lambda r: r.get("calls", 0))
        return {str(k): int(v) for k, v in top.get("call_sizes", {}).items()}
    total: dict[str, int] = {}
    for render in renders.values():
        for size, count in render.get("call_sizes", {}).items():
            total[str(size)] = total.get(str(size), 0) + int(count)
    return dict(sorted(total.items(), key=lambda kv: int(kv[0])))


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def outputs_of(stats: dict[str, Any], obs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A channel's outputs with their state: RTMP pushes, the recording, and OBS (the studio's link)."""
    out = []
    for output in stats.get("outputs", []):
        kind = str(output.get("kind", "?"))
        if kind == "record":
            out.append({"kind": "record", "target": output.get("path", ""), "state": "recording"})
        else:
            out.append({"kind": kind, "target": output.get("target", ""), "state": output.get("state", "?"),
                        "error": output.get("last_error")})  # fmt: skip
    if obs is not None:
        out.append({"kind": "obs", "target": obs.get("target", ""), "state": obs.get("state", "?"),
                    "error": obs.get("last_error")})  # fmt: skip
    return out


class StudioFeed:
    def __init__(self, front: Front) -> None:
        self.front = front
        self.history = StudioHistory()
        self.machine = MachineUse()
        self.state: dict[str, Any] | None = None
        """The last sample as the page shows it (None until the first)."""
        self._pages: set[asyncio.Queue[bytes | None]] = set()
        self._cpu_s: dict[int, tuple[float, float]] = {}  # worker pid -> (time, CPU seconds)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="studio-feed")

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample()
            except Exception:  # a sample that fails (a worker restarting mid-call) is skipped, not fatal
                log.exception("studio page: a sample failed")
            await asyncio.sleep(max(0.05, SAMPLE_S - (time.monotonic() - started)))

    async def sample(self) -> dict[str, Any]:
        """Read every worker once, add it to the history -> the page's new state (also sent to pages)."""
        front = self.front
        workers = list(front.workers)
        health = await front.health()
        results = await asyncio.gather(*(w.telemetry() for w in workers), return_exceptions=True)
        telemetry = {w.index: r for w, r in zip(workers, results, strict=True) if isinstance(r, dict)}
        now = time.time()
        fps = self.history.add_channels(now, health["channels"])
        for tel in telemetry.values():
            for name, extra in tel["channels"].items():
                self.history.add_answers(tel["pid"], name, extra["answers"])
        renders = {index: tel["render"] for index, tel in telemetry.items()}
        batch_mean = self.history.render_batch(renders)
        cpu_pct, gpus = self.machine.cpu_pct(), await self.machine.gpus()
        gpu_pct = max(g["util_pct"] for g in gpus) if gpus else None
        self.history.studio.add(now, cpu_pct=cpu_pct, gpu_pct=gpu_pct, batch_mean=batch_mean)
        self.history.trim(now)
        state = self._state(now, health, telemetry, fps, renders, cpu_pct, gpus, batch_mean)
        self.state = state
        recent = list(self.history.answers)[-RECENT_ANSWERS:]  # the page adds those it has not got (by key)
        self._publish({"state": state, "point": self._point(now, fps, cpu_pct, gpu_pct, batch_mean), "answers": recent})
        return state

    @staticmethod
    def _point(
        now: float, fps: dict[str, dict[str, float | None]], cpu: float | None, gpu: float | None, batch: float | None
    ) -> dict[str, Any]:
        """This sample's history point, for the plots of pages already open."""
        return {"t": now, "channels": fps, "cpu_pct": cpu, "gpu_pct": gpu, "batch_mean": batch}

    def _worker_cores(self, now: float, telemetry: dict[int, dict[str, Any]]) -> dict[int, float | None]:
        """CPU cores each worker process used since the last sample."""
        used: dict[int, float | None] = {}
        for index, tel in telemetry.items():
            pid, cpu_s = tel["pid"], float(tel["cpu_s"])
            before = self._cpu_s.get(pid)
            self._cpu_s[pid] = (now, cpu_s)
            ok = before is not None and now > before[0] and cpu_s >= before[1]
            used[index] = round((cpu_s - before[1]) / (now - before[0]), 2) if ok and before else None
        live = {tel["pid"] for tel in telemetry.values()}
        for pid in [p for p in self._cpu_s if p not in live]:
            del self._cpu_s[pid]
        return used

    def _state(
        self,
        now: float,
        health: dict[str, Any],
        telemetry: dict[int, dict[str, Any]],
        fps: dict[str, dict[str, float | None]],
        renders: dict[int, dict[str, Any]],
        cpu_pct: float | None,
        gpus: list[dict[str, Any]] | None,
        batch_mean: float | None,
    ) -> dict[str, Any]:
        front = self.front
        extras = {name: extra for tel in telemetry.values() for name, extra in tel["channels"].items()}
        channels = {}
        for name, stats in health["channels"].items():
            cfg = front.configs.get(name)
            extra = extras.get(name, {})
            program = stats.get("program", {})
            channels[name] = {
                "title": cfg.display_title if cfg is not None else name,
                "format": f"{cfg.video.width}x{cfg.video.height}@{cfg.video.fps}" if cfg is not None else "",
                "worker": stats.get("worker", {}).get("index"),
                "state": "paused" if stats.get("paused") else "on_air",
                "paused": stats.get("paused"),
                "fps": fps.get(name, {}).get("fps"),
                "late_frames": int(program.get("late_frames", 0)),
                "late_per_s": fps.get(name, {}).get("late"),
                "lipsync_deadline_misses": extra.get("lipsync_deadline_misses", 0),
                "viewers": stats.get("viewers", 0),
                "turns": stats.get("turns", 0),
                "restarts": stats.get("restarts", 0),
                "outputs": outputs_of(stats, health.get("obs")),
                "chat_queue": extra.get("chat_queue"),
                "chat_waiting": extra.get("chat_waiting", 0),
                "chat_paused": extra.get("chat_paused"),
                "answers": list(reversed(extra.get("answers", [])))[:ANSWERS_SHOWN],
                "av_offset_ms": stats.get(AV_OFFSET_KEY),
            }
        capacity = dict(health["capacity"])
        capacity["channels_left"] = channels_left(capacity, len(channels))
        cores = self._worker_cores(now, telemetry)
        observed = [(float(k), int(n)) for tel in telemetry.values() for k, n in tel["ttft_ms"].items()]
        ttft = list(np.repeat([v for v, _ in observed], [n for _, n in observed])) if observed else []
        return {
            "t": now,
            "channels": channels,
            "failed": health["failed"],
            "strip": {
                "cpu_pct": cpu_pct,
                "cores": self.machine.cores,
                "gpus": gpus,
                "workers": [
                    {"index": w["index"], "pid": w["pid"], "state": w["state"], "cores_used": cores.get(w["index"])}
                    for w in health["workers"]
                ],
                "batch_mean": round(batch_mean, 2) if batch_mean is not None else None,
                "batch_histogram": batch_histogram(renders, bool(capacity.get("shared_renderer"))),
                "capacity": capacity,
                "llm_ready": any(tel.get("llm_ready") for tel in telemetry.values()),
                "llm_backend": front.cfg.llm.backend,
                "ttft_p50_ms": percentile(ttft, 50),
                "ttft_p95_ms": percentile(ttft, 95),
                "ttft_samples": len(ttft),
            },
        }

    # ------------------------------------------------------------------ pages
    def subscribe(self) -> asyncio.Queue[bytes | None]:
        """A queue of the next samples for one page, each an SSE message ready to send (None: the end);
        raises OverflowError when MAX_PAGES are fed."""
        if len(self._pages) >= MAX_PAGES:
            raise OverflowError(f"{MAX_PAGES} studio pages are open already; close one")
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._pages.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._pages.discard(queue)

    def _publish(self, message: dict[str, Any] | None) -> None:
        """Encoded once, whatever the number of pages."""
        data = None if message is None else f"data: {json.dumps(message)}\n\n".encode()
        for queue in self._pages:
            if queue.full():  # the page is behind: it gets the newest state, not a backlog
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(data)

    async def aclose(self) -> None:
        """Stop sampling and end every page's stream (the server is shutting down)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        self._publish(None)
