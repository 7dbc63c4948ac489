"""Prometheus metrics of a worker's studio: read from the live objects at scrape time.

Nothing is counted twice or on a hot path: the Program, encoder, lip-sync service and turns keep
their own counters already, and this collector turns them into metric families when Prometheus
asks. Frame rates are measured between scrapes (frames sent / seconds), per channel. The families
travel to the front as plain data (`to_wire`), which serves every worker's under one `/metrics`
with a `worker` label (agents/front/metrics.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from agents.worker.studio import Studio

PREFIX = "avatarcast"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SECONDS_BUCKETS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
AV_OFFSET_HELP = (
    "A/V offset the WebRTC viewers get, audio minus video (positive: the voice behind the picture), measured "
    "from when their packets really leave (median over viewers; absent without viewers)"
)


def histogram(name: str, doc: str, observed: Mapping[float, int], buckets: Iterable[float]) -> Metric:
    """A histogram family from counts of observed values (value -> how often)."""
    family = HistogramMetricFamily(name, doc)
    cumulative = [(str(bound), sum(n for v, n in observed.items() if v <= bound)) for bound in buckets]
    cumulative.append(("+Inf", sum(observed.values())))
    family.add_metric([], cumulative, sum(v * n for v, n in observed.items()))
    return family


class StudioCollector:
    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._last: dict[str, tuple[float, int]] = {}  # channel -> (time, video frames) at the last scrape

    def _fps(self, name: str, frames: int) -> float:
        now = time.monotonic()
        then, before = self._last.get(name, (now, frames))
        self._last[name] = (now, frames)
        return (frames - before) / (now - then) if now > then else 0.0

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

        def add(kind: type, key: str, doc: str, value: float, **labels: str) -> None:
            family = families.get(key)
            if family is None:
                family = families[key] = kind(f"{PREFIX}_{key}", doc, labels=list(labels))
            family.add_metric(list(labels.values()), value)

        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        ttft: dict[float, int] = {}
        for name, channel in self.studio.channels.items():
            program = channel.program
            stats: Mapping[str, int] = program.stats if program else {}
            frames = stats.get("video_frames", 0)
            add(
                gauge,
                "fps_out",
                "Video frames per second out, since the last scrape",
                self._fps(name, frames),
                channel=name,
            )
            add(counter, "video_frames", "Video frames sent", frames, channel=name)
            add(counter, "frame_deadline_misses", "Frames not ready in time (the last one shown again)",
                stats.get("late_frames", 0), channel=name)  # fmt: skip
            add(counter, "encoder_dropped_frames", "Frames dropped because the encoder fell behind",
                channel.encoder.stats.get("video_dropped", 0), channel=name)  # fmt: skip
            talk = channel.conversation
            add(gauge, "viewers", "WebRTC viewers", len(channel.media.webrtc.viewers), channel=name)
            waiting = sum(1 for t in talk.turns.values() if not t.started)
            add(gauge, "turn_queue_depth", "Turns waiting for their go", waiting, channel=name)
            offset_ms = channel.media.webrtc.av_offset_ms()
            if offset_ms is not None:
                add(gauge, "av_offset_seconds", AV_OFFSET_HELP, offset_ms / 1000, channel=name)
            add(gauge, "paused", "1 while the channel is paused", 1 if talk.paused else 0, channel=name)
            restarts = channel.media.supervisor.restarts if channel.media.supervisor else 0
            add(counter, "restarts", "Program restarts after a failure", restarts, channel=name)
            for output in channel.media.outputs.info():
                state = str(output.get("state", "recording"))
                target = str(output.get("target", output.get("path", "")))
                add(gauge, "output_up", "1 when the output is live", 1 if state in ("live", "recording") else 0,
                    channel=name, kind=str(output["kind"]), target=target, state=state)  # fmt: skip
            for value, n in talk.ttft_observed.items():
                ttft[value] = ttft.get(value, 0) + n
        yield from families.values()
        yield histogram(f"{PREFIX}_llm_time_to_first_token_seconds", "LLM time to first token", ttft, SECONDS_BUCKETS)
        lipsync = self.studio.lipsync.metrics()
        tensor = lipsync["tensor"]
        yield histogram(f"{PREFIX}_lipsync_batch_frames", "Frames per lip-sync render call, across channels",
                        {int(k): v for k, v in tensor["call_sizes"].items()}, BATCH_BUCKETS)  # fmt: skip
        tts = self.studio.tts.metrics()
        for service, m in (("lipsync", lipsync), ("tts", tts)):
            yield histogram(f"{PREFIX}_{service}_batch_items", f"Jobs per {service} batch, across channels",
                            {int(k): v for k, v in m["batch_sizes"].items()}, BATCH_BUCKETS)  # fmt: skip
            for key in ("queue_depth", "in_flight"):
                g = GaugeMetricFamily(f"{PREFIX}_{service}_{key}", f"{service}: jobs {key.replace('_', ' ')}")
                g.add_metric([], m[key])
                yield g
            for key in ("deadline_misses", "rejected", "expired", "cancelled"):
                c = CounterMetricFamily(f"{PREFIX}_{service}_{key}", f"{service} jobs: {key.replace('_', ' ')}",
                                        labels=["channel"])  # fmt: skip
                for ch, ks in m["keys"].items():
                    if ch in self.studio.channels:  # a shared GPU service also counts other workers' channels
                        c.add_metric([ch], ks[key])
                yield c
        rtf = GaugeMetricFamily(f"{PREFIX}_tts_real_time_factor", "Synthesis s per s of speech", labels=["channel"])
        for ch, stats in tts["speech"].items():
            rtf.add_metric([ch], stats["rtf"])
        yield rtf
        done = tensor["frames"]
        per_frame = GaugeMetricFamily(f"{PREFIX}_lipsync_seconds_per_frame", "Mean render time per frame")
        per_frame.add_metric([], tensor["render_seconds"] / done if done else 0.0)
        yield per_frame
        yield from self._studio_gauges()

    def _studio_gauges(self) -> Iterator[Metric]:
        budgets: dict[str, Any] = self.studio.admission.budgets(list(self.studio.demands.values()))
        for key, value in budgets.items():
            family = GaugeMetricFamily(f"{PREFIX}_capacity_{key}", f"Admission control: {key.replace('_', ' ')}")
            family.add_metric([], float(value))
            yield family
        llm = GaugeMetricFamily(f"{PREFIX}_llm_ready", "1 once the shared LLM engine is up")
        llm.add_metric([], 1 if self.studio.llm is not None else 0)
        yield llm


def to_wire(families: Iterable[Metric]) -> list[dict[str, Any]]:
    """Metric families as plain JSON data: name, type, help and samples (name, labels, value)."""
    return [
        {
            "name": f.name,
            "type": f.type,
            "help": f.documentation,
            "samples": [[s.name, dict(s.labels), s.value] for s in f.samples],
        }
        for f in families
    ]
