"""`/metrics`: every worker's metric families under one exposition, each sample with its `worker`
label, plus the front's own (workers up, restarts)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agents.front.front import Front
from agents.worker.metrics import PREFIX

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def merge(per_worker: list[tuple[int, list[dict[str, Any]]]]) -> list[Metric]:
    """Families of the same name from several workers become one family, samples labelled by worker."""
    merged: dict[str, Metric] = {}
    for index, families in per_worker:
        for family in families:
            out = merged.get(family["name"])
            if out is None:
                out = merged[family["name"]] = Metric(family["name"], family["help"], family["type"])
            for name, labels, value in family["samples"]:
                out.add_sample(name, {**labels, "worker": str(index)}, value)
    return list(merged.values())


async def render(front: Front) -> bytes:
    results = await asyncio.gather(*(w.metrics() for w in front.workers), return_exceptions=True)
    per_worker = [(w.index, r) for w, r in zip(front.workers, results, strict=True) if isinstance(r, list)]
    up = GaugeMetricFamily(f"{PREFIX}_worker_up", "1 while the media worker answers", labels=["worker"])
    restarts = CounterMetricFamily(f"{PREFIX}_worker_restarts", "Media worker restarts", labels=["worker"])
    for worker, result in zip(front.workers, results, strict=True):
        up.add_metric([str(worker.index)], 0 if isinstance(result, BaseException) else 1)
        restarts.add_metric([str(worker.index)], getattr(worker, "restarts", 0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*merge(per_worker), up, restarts]))  # type: ignore[arg-type]
    return generate_latest(registry)
