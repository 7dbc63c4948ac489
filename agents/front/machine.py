"""How busy the machine is: CPU from the kernel's counters, GPU from nvidia-smi (for the studio strip).

The CPU share is the busy part of all cores' time between two readings of /proc/stat (what top
shows). The GPU is read with nvidia-smi, not through torch: a CUDA context in the front would take
GPU memory the channels need. It runs at most every GPU_EVERY_S and is bounded by a timeout; on a
machine without it the strip says that no GPU was found.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

GPU_EVERY_S = 5.0
GPU_TIMEOUT_S = 3.0
GPU_QUERY = "name,utilization.gpu,memory.used,memory.total"


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores since boot, or None where /proc/stat is not there."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [float(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """nvidia-smi's CSV (noheader, nounits) -> one dict per GPU; lines it cannot read are skipped."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        with contextlib.suppress(ValueError):
            gpus.append(
                {"name": parts[0], "util_pct": float(parts[1]), "mem_used_mb": float(parts[2]),
                 "mem_total_mb": float(parts[3])}
            )  # fmt: skip
    return gpus


class MachineUse:
    def __init__(self) -> None:
        self.cores = len(os.sched_getaffinity(0))
        self._cpu: tuple[float, float] | None = cpu_times()
        self._smi = shutil.which("nvidia-smi")
        self._gpus: list[dict[str, Any]] | None = None
        self._gpu_at = -GPU_EVERY_S

    def cpu_pct(self) -> float | None:
        """Busy share of all cores since the last call (%), None the first time or without /proc."""
        now = cpu_times()
        before, self._cpu = self._cpu, now
        if now is None or before is None or now[1] <= before[1]:
            return None
        return round(100 * (now[0] - before[0]) / (now[1] - before[1]), 1)

    async def gpus(self) -> list[dict[str, Any]] | None:
        """Each GPU's name, utilisation and memory; None where no GPU was found."""
        if self._smi is None:
            return None
        if time.monotonic() - self._gpu_at < GPU_EVERY_S:
            return self._gpus
        self._gpu_at = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                self._smi, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        except OSError:
            return None
        try:
            async with asyncio.timeout(GPU_TIMEOUT_S):
                out, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return self._gpus
        self._gpus = parse_nvidia_smi(out.decode(errors="replace")) or None
        return self._gpus
