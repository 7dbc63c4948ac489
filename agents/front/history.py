"""The studio's own last hour, in memory and bounded, for the studio page's plots.

One sample a second (agents/front/studio_feed.py) adds, per channel, its frame rate and its
deadline misses per second (from the Program's counters, as rates between samples), the
renderer's mean batch over that second, machine CPU and GPU use; every answer that went on air
adds its voice-to-answer latency once. Nothing older than WINDOW_S is kept, and no series holds
more than MAX_POINTS points whatever the sample rate, so memory stays flat however long the
studio runs. Counters that go backwards (a worker restarted) start their rate afresh.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 3600.0
"""An hour: what the plots show."""
MAX_POINTS = 3600
"""Points per series (one a second for the hour)."""
MAX_ANSWERS = 5000
"""Answers kept in the hour, across channels (far more than channels can say)."""
SEEN_KEPT = 10_000
"""Answer keys remembered so that each is added once (bounded, oldest forgotten first)."""


def _rate(now: tuple[float, float], before: tuple[float, float] | None) -> float | None:
    """Per second between two (time, counter) readings; None for the first one or a counter reset."""
    if before is None or now[0] <= before[0] or now[1] < before[1]:
        return None
    return (now[1] - before[1]) / (now[0] - before[0])


@dataclass
class Series:
    """Time-stamped samples of a few named values, trimmed to the window."""

    names: tuple[str, ...]
    t: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    values: dict[str, deque[float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = {name: deque(maxlen=MAX_POINTS) for name in self.names}

    def add(self, t: float, **values: float | None) -> None:
        self.t.append(t)
        for name in self.names:
            value = values.get(name)
            self.values[name].append(round(value, 3) if value is not None else None)

    def trim(self, before: float) -> None:
        while self.t and self.t[0] < before:
            self.t.popleft()
            for column in self.values.values():
                column.popleft()

    def to_json(self) -> dict[str, list[float | None]]:
        return {"t": list(self.t), **{name: list(column) for name, column in self.values.items()}}


class StudioHistory:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.channels: dict[str, Series] = {}
        """channel -> fps, late (frames repeated because not ready in time, per second)."""
        self.studio = Series(("cpu_pct", "gpu_pct", "batch_mean"))
        self.answers: deque[dict[str, Any]] = deque(maxlen=MAX_ANSWERS)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._frames: dict[str, tuple[float, float, float]] = {}  # channel -> (t, video frames, late frames)
        self._render: dict[int, tuple[float, float]] = {}  # worker -> (render calls, frames)

    def add_channels(self, t: float, channels: dict[str, Any]) -> dict[str, dict[str, float | None]]:
        """Health's channel stats at `t` -> each channel's fps and misses per second, added to the history."""
        point = {}
        for name, stats in channels.items():
            program = stats.get("program", {})
            frames, late = float(program.get("video_frames", 0)), float(program.get("late_frames", 0))
            before = self._frames.get(name)
            fps = _rate((t, frames), before[:2] if before else None)
            late_rate = _rate((t, late), (before[0], before[2]) if before else None)
            self._frames[name] = (t, frames, late)
            if fps is None:
                continue
            self.channels.setdefault(name, Series(("fps", "late"))).add(t, fps=fps, late=late_rate)
            point[name] = {"fps": round(fps, 2), "late": round(late_rate, 2) if late_rate is not None else None}
        for gone in [n for n in self._frames if n not in channels]:
            del self._frames[gone]  # its series stays for the hour: the plot shows when it went
        return point

    def render_batch(self, renders: dict[int, dict[str, Any]]) -> float | None:
        """Mean frames per render call since the last sample, over the workers' renderers."""
        calls = frames = 0.0
        for worker, render in renders.items():
            now = (float(render.get("calls", 0)), float(render.get("frames", 0)))
            before = self._render.get(worker)
            self._render[worker] = now
            if before is not None and now[0] >= before[0] and now[1] >= before[1]:
                calls += now[0] - before[0]
                frames += now[1] - before[1]
        return frames / calls if calls else None

    def add_answers(self, worker_pid: int, channel: str, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answers not seen before -> added (one line each: when, where, how long it took) and returned."""
        new = []
        for answer in answers:
            key = f"{worker_pid}/{answer['turn']}"
            if key in self._seen:
                continue
            self._seen[key] = None
            while len(self._seen) > SEEN_KEPT:
                self._seen.popitem(last=False)
            entry = {"key": key, "t": answer["at"], "channel": channel, "latency_ms": answer["latency_ms"]}
            entry |= {k: answer.get(k) for k in ("from", "source", "kind", "ttft_ms")}
            self.answers.append(entry)
            new.append(entry)
        return new

    def trim(self, now: float) -> None:
        before = now - self.window_s
        for series in self.channels.values():
            series.trim(before)
        for name in [n for n, s in self.channels.items() if not s.t]:
            del self.channels[name]
        self.studio.trim(before)
        while self.answers and self.answers[0]["t"] < before:
            self.answers.popleft()

    def ttft_ms(self) -> list[float]:
        """LLM times to first token of the hour's answers (ms)."""
        return [a["ttft_ms"] for a in self.answers if a.get("ttft_ms") is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "channels": {name: series.to_json() for name, series in self.channels.items()},
            "studio": self.studio.to_json(),
            "answers": list(self.answers),
        }
