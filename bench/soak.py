"""Soak: channels talking and viewers watching for a long time; what grows, what drifts.

    python bench/soak.py --minutes 60 [--channels 3] [--workers 1] [--size 512] [--json]

Runs `avatarcast serve` as users do (a real process, and its worker processes with --workers > 1)
on a free 127.0.0.1 port, one real aiortc viewer per channel, and a line for each channel to say
whenever it has nothing queued, so every channel talks the whole time. Every --sample-s seconds
it prints, and keeps:
  * RSS and open file descriptors of every process of the studio (front, workers, services);
  * deadline misses (frames not rendered in time) and frames received by the viewers;
  * the A/V offset measured at each viewer from the RTP timestamps and RTCP sender reports it
    received (tests/viewer_client.py), next to the one the channel publishes on /metrics.
Goals (issue 13, over 60 min): RSS growth < 2 % (from the first sample after the warm-up to the
last), file descriptors flat, offset within +-20 ms, drift <= 10 ms/h (the slope of a line fitted
to the viewers' offsets). JSON keys: minutes, channels, workers, processes{label: rss_mb[], fds[],
rss_growth_pct, fds_first (after the warm-up, as RSS), fds_last}, deadline_misses,
frames_received_pct, av_offset_ms{viewer, published: first, last, min, max, drift_ms_per_h}, samples,
goals{...: bool}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from models.defaults import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT))  # the viewers are the tests' real aiortc peers
from bench.studio_process import ServeProcess
from tests.conftest import free_port
from tests.viewer_client import AiortcViewer, av_offset_from_reports

LINES = [
    "Welcome back to the stream, everyone. Today we are looking at running shoes for every kind of runner.",
    "The Stride Runner is light and fast, and it comes in sizes thirty six to forty seven.",
    "Returns are free within thirty days, so you can try a pair at home without any worry.",
    "If you are new to running, start slowly, three short runs a week is plenty at first.",
]
WARMUP_FRACTION = 0.15
"""RSS growth and descriptors are measured from the first sample after this share of the run
(caches and the allocator's arenas settle, and files opened once at the first turn are open)."""


def proc_usage(pid: int) -> tuple[float, int] | None:
    """(RSS in MB, open file descriptors) of a live process, None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss_kb / 1024, fds


def studio_config(args: argparse.Namespace) -> dict[str, Any]:
    channels = [
        {"name": f"soak{i}", "video": {"width": args.size, "height": args.size, "fps": 25}}
        for i in range(args.channels)
    ]
    return {
        "server": {"workers": args.workers, "chats_per_minute": 1000},
        "llm": {"backend": "none"},
        "channels": channels,
    }


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.studio = ServeProcess(studio_config(args), free_port())
        self.url = self.studio.url
        self.samples: list[dict[str, Any]] = []
        self.viewers: dict[str, AiortcViewer] = {}

    async def health(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        return await self.studio.health(http)

    async def published_offsets(self, http: aiohttp.ClientSession) -> dict[str, float]:
        async with http.get(f"{self.url}/metrics") as res:
            text = await res.text()
        out = {}
        for line in text.splitlines():
            if line.startswith("avatarcast_av_offset_seconds{"):
                channel = line.split('channel="', 1)[1].split('"', 1)[0]
                out[channel] = float(line.rsplit(" ", 1)[1]) * 1000
        return out

    async def keep_talking(self, http: aiohttp.ClientSession) -> None:
        """Each channel gets its next line as soon as it has nothing left to say."""
        n = 0
        while True:
            health = await self.health(http)
            for name, stats in health["channels"].items():
                if stats.get("turns", 0) == 0:
                    body = {"text": LINES[n % len(LINES)], "mode": "say"}
                    n += 1
                    async with http.post(f"{self.url}/c/{name}/chat", json=body) as res:
                        if res.status != 202:
                            print(f"  {name}: a line was refused ({res.status}: {await res.text()})", file=sys.stderr)
            await asyncio.sleep(0.5)  # polling the studio's state, as a producer would

    def processes(self, health: dict[str, Any], front_pid: int) -> dict[str, int]:
        pids = {"front": front_pid}
        for worker in health["workers"]:
            if worker.get("pid") and worker["pid"] != front_pid:
                pids[f"worker{worker['index']}"] = worker["pid"]
        for name, service in (health.get("services") or {}).items():
            if service.get("pid"):
                pids[name] = service["pid"]
        return pids

    async def sample(self, http: aiohttp.ClientSession, front_pid: int, t0: float, since: float) -> dict[str, Any]:
        health = await self.health(http)
        published = await self.published_offsets(http)
        usage = {label: proc_usage(pid) for label, pid in self.processes(health, front_pid).items()}
        viewer_offsets = {}
        for name, viewer in self.viewers.items():
            sync = health["channels"][name]["viewer_sync"].get(viewer.viewer_id)
            if sync and len(sync["first_pts_s"]) == 2:
                offset = av_offset_from_reports(
                    viewer.reports["audio"], viewer.reports["video"], sync["first_pts_s"], since
                )
                if offset is not None:
                    viewer_offsets[name] = offset * 1000
        sample = {
            "t_s": round(time.monotonic() - t0, 1),
            "processes": {k: {"rss_mb": round(v[0], 1), "fds": v[1]} for k, v in usage.items() if v is not None},
            "deadline_misses": sum(int(c["program"].get("late_frames", 0)) for c in health["channels"].values()),
            "frames_received": sum(len(v.got.video_pts) for v in self.viewers.values()),
            "av_offset_ms": {"viewer": viewer_offsets, "published": published},
        }
        procs = ", ".join(f"{k} {v['rss_mb']:.0f} MB/{v['fds']} fds" for k, v in sample["processes"].items())
        offsets = ", ".join(f"{k} {v:+.1f}" for k, v in viewer_offsets.items()) or "none yet"
        print(f"[{sample['t_s']:7.0f} s] {procs}; misses {sample['deadline_misses']}; "
              f"A/V at viewers (ms) {offsets}", file=sys.stderr, flush=True)  # fmt: skip
        return sample

    def run(self) -> dict[str, Any]:
        with self.studio:
            return asyncio.run(self._drive())

    async def _drive(self) -> dict[str, Any]:
        args, studio = self.args, self.studio
        async with aiohttp.ClientSession() as http:
            await studio.up(http)
            for i in range(args.channels):
                viewer = AiortcViewer(self.url, f"soak{i}")
                await viewer.connect()
                self.viewers[f"soak{i}"] = viewer
            talker = asyncio.create_task(self.keep_talking(http))
            t0 = time.monotonic()
            end = t0 + args.minutes * 60
            try:
                while time.monotonic() < end:
                    since = time.monotonic()
                    await asyncio.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
                    studio.check()
                    self.samples.append(await self.sample(http, studio.pid, t0, since))
            finally:
                talker.cancel()
                for viewer in self.viewers.values():
                    await viewer.close()
        return self.summary(time.monotonic() - t0)

    def summary(self, elapsed: float) -> dict[str, Any]:
        samples, args = self.samples, self.args
        settled = [s for s in samples if s["t_s"] >= WARMUP_FRACTION * elapsed] or samples
        processes = {}
        for label in samples[0]["processes"]:
            rss = [s["processes"][label]["rss_mb"] for s in samples if label in s["processes"]]
            fds = [s["processes"][label]["fds"] for s in samples if label in s["processes"]]
            first = next(s["processes"][label] for s in settled if label in s["processes"])
            base = first["rss_mb"]
            processes[label] = {
                "rss_mb": rss,
                "fds": fds,
                "rss_growth_pct": round(100 * (rss[-1] - base) / base, 2),
                "fds_first": first["fds"],
                "fds_last": fds[-1],
            }
        offsets = {kind: _offset_summary(samples, kind) for kind in ("viewer", "published")}
        expected = 25 * elapsed * args.channels
        received = samples[-1]["frames_received"]  # the viewers joined just before t0
        viewer = offsets["viewer"]
        return {
            "minutes": round(elapsed / 60, 2),
            "channels": args.channels,
            "workers": args.workers,
            "processes": processes,
            "deadline_misses": samples[-1]["deadline_misses"],
            "frames_received_pct": round(100 * received / expected, 1),
            "av_offset_ms": offsets,
            "samples": samples,
            "goals": {
                "rss_growth_under_2_pct": all(p["rss_growth_pct"] < 2 for p in processes.values()),
                "fds_flat": all(p["fds_last"] <= p["fds_first"] for p in processes.values()),
                "offset_within_20_ms": viewer["max_abs"] is not None and viewer["max_abs"] <= 20,
                "drift_under_10_ms_per_h": viewer["drift_ms_per_h"] is not None and abs(viewer["drift_ms_per_h"]) <= 10,
            },
        }


def _offset_summary(samples: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    points = [(s["t_s"], v) for s in samples for v in s["av_offset_ms"][kind].values()]
    if not points:
        return {"first": None, "last": None, "min": None, "max": None, "max_abs": None, "drift_ms_per_h": None}
    t, v = np.array(points).T
    drift = float(np.polyfit(t, v, 1)[0] * 3600) if len(set(t)) > 1 else None
    return {
        "first": round(float(v[0]), 1),
        "last": round(float(v[-1]), 1),
        "min": round(float(v.min()), 1),
        "max": round(float(v.max()), 1),
        "max_abs": round(float(np.abs(v).max()), 1),
        "drift_ms_per_h": None if drift is None else round(drift, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args()
    result = Soak(args).run()
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['minutes']} min, {result['channels']} channels, {result['workers']} worker(s)")
    for label, p in result["processes"].items():
        print(f"  {label}: RSS {p['rss_mb'][0]} -> {p['rss_mb'][-1]} MB ({p['rss_growth_pct']:+.2f} % after warm-up), "
              f"fds {p['fds_first']} -> {p['fds_last']}")  # fmt: skip
    print(f"  deadline misses {result['deadline_misses']}, frames received {result['frames_received_pct']} %")
    for kind, o in result["av_offset_ms"].items():
        print(f"  A/V offset ({kind}): {o['first']} -> {o['last']} ms, range {o['min']}..{o['max']}, "
              f"drift {o['drift_ms_per_h']} ms/h")  # fmt: skip
    print("  goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in result["goals"].items()))


if __name__ == "__main__":
    main()
