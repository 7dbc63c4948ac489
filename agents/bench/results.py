"""What `avatarcast bench` found, as one plain structure: the rows of the module table (each with its CPU
and GPU figure and the speed-up), the end-to-end estimate and the channel count.

A figure missing on one side says why instead (no GPU, a module that runs on one kind of device
only, a backend switched off), so the table never shows a blank that could be read as zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One measured figure of one module, on the CPU and on the GPU."""

    module: str
    measure: str
    unit: str
    higher_is_better: bool
    cpu: float | None = None
    gpu: float | None = None
    cpu_note: str = ""
    """Why there is no CPU figure (when cpu is None)."""
    gpu_note: str = ""
    """Why there is no GPU figure (when gpu is None): "no GPU found", "runs on the CPU only", ..."""

    @property
    def speedup(self) -> float | None:
        """How many times faster on the GPU (None unless both were measured)."""
        if self.cpu is None or self.gpu is None or self.cpu <= 0 or self.gpu <= 0:
            return None
        return self.gpu / self.cpu if self.higher_is_better else self.cpu / self.gpu

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


@dataclass
class Stage:
    """One step between the end of a viewer's voice and the answer's first frame on air."""

    name: str
    ms: float | None
    note: str = ""


@dataclass
class BenchResults:
    machine: dict[str, Any]
    config: str
    gpu_found: bool
    gpu_note: str
    rows: list[Row] = field(default_factory=list)
    lipsync_by_batch: dict[str, dict[int, float]] = field(default_factory=dict)
    """device ("cpu", "gpu") -> batch -> frames/s."""
    stages: list[Stage] = field(default_factory=list)
    end_to_end_ms: float | None = None
    end_to_end_how: str = ""
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    """device -> the talking channels it holds (agents/bench/capacity.py: estimate, admission, measured)."""
    channels_how: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    """module -> why it was not measured."""
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def row(self, module: str, measure: str) -> Row:
        return next(r for r in self.rows if r.module == module and r.measure == measure)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "config": self.config,
            "gpu_found": self.gpu_found,
            "gpu_note": self.gpu_note,
            "rows": [r.to_json() for r in self.rows],
            "lipsync_by_batch": {d: {str(b): v for b, v in by.items()} for d, by in self.lipsync_by_batch.items()},
            "end_to_end": {
                "ms": self.end_to_end_ms,
                "how": self.end_to_end_how,
                "stages": [asdict(s) for s in self.stages],
            },
            "channels": self.channels,
            "channels_how": self.channels_how,
            "skipped": self.skipped,
            "details": self.details,
            "seconds": round(self.seconds, 1),
        }
