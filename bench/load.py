"""Load: many WebRTC viewers on one channel and many SSE clients on the studio.

    python bench/load.py [--viewers 100] [--sse 500] [--seconds 30] [--size 512] [--json]

Runs `avatarcast serve` (bench/studio_process.py) with one talking channel, then, step by step,
adds real aiortc viewers (ICE, DTLS, SRTP; they count what arrives but do not decode it, so 100 of
them fit in this bench's process) and SSE clients on the channel's event stream. For each level it
measures the studio process's CPU (from /proc, the viewers' own CPU is not in it) and the
channel's frames: the rate its Program sends and the share rendered in time, and what the viewers
received. Figures: CPU per viewer (the slope over the levels), the channel's fps under the full
load. JSON keys: levels[{viewers, sse, cpu_cores, fps, fresh_pct, viewer_packets_per_s,
sse_events}], cpu_per_viewer_cores, cpu_per_sse_client_cores, holds_25_fps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from models.defaults import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT))
from bench.studio_process import ServeProcess, cpu_seconds
from tests.conftest import free_port

CHANNEL = "load"
LINE = "Thanks for watching, everyone. The Stride Runner is light, fast and comes in sizes thirty six to forty seven."


class CountingViewer:
    """A real WebRTC viewer that counts the RTP packets it gets and decodes none (the CPU is the studio's
    to measure, not ours to spend)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.packets = 0
        self.connected = asyncio.Event()

    async def connect(self) -> None:
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http, http.post(f"{self.url}/c/{CHANNEL}/offer", json=offer) as res:
            body = await res.json()
            if res.status != 200:
                raise RuntimeError(f"offer refused: {res.status} {body}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        for transceiver in self.pc.getTransceivers():
            self._count(transceiver.receiver)

    def _count(self, receiver: Any) -> None:
        async def on_rtp(packet: Any, arrival_time_ms: int) -> None:  # dropped here: never decoded
            self.packets += 1
            self.connected.set()

        receiver._handle_rtp_packet = on_rtp  # the transport looks it up on the receiver for each packet

    async def close(self) -> None:
        await self.pc.close()


class SseClient:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.events = 0
        self.task = asyncio.create_task(self._read(url, http))

    async def _read(self, url: str, http: aiohttp.ClientSession) -> None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
            async with http.get(f"{url}/c/{CHANNEL}/events") as res:
                async for line in res.content:
                    if line.startswith(b"data:"):
                        self.events += 1


async def measure(studio: ServeProcess, http: aiohttp.ClientSession, viewers: list[CountingViewer],
                  sse: list[SseClient], seconds: float) -> dict[str, Any]:  # fmt: skip
    health = await studio.health(http)
    stats = health["channels"][CHANNEL]["program"]
    frames0, late0 = stats.get("video_frames", 0), stats.get("late_frames", 0)
    packets0, events0 = sum(v.packets for v in viewers), sum(c.events for c in sse)
    cpu0, t0 = cpu_seconds(studio.pid), time.monotonic()
    await asyncio.sleep(seconds)  # the measuring window
    cpu1, t1 = cpu_seconds(studio.pid), time.monotonic()
    health = await studio.health(http)
    stats = health["channels"][CHANNEL]["program"]
    frames, late = stats.get("video_frames", 0) - frames0, stats.get("late_frames", 0) - late0
    elapsed = t1 - t0
    return {
        "viewers": len(viewers),
        "sse": len(sse),
        "cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
        "fps": round(frames / elapsed, 2),
        "fresh_pct": round(100 * (frames - late) / max(1, frames), 2),
        "viewer_packets_per_s": round((sum(v.packets for v in viewers) - packets0) / elapsed / max(1, len(viewers)), 1),
        "sse_events": sum(c.events for c in sse) - events0,
    }


async def keep_talking(studio: ServeProcess, http: aiohttp.ClientSession) -> None:
    while True:
        health = await studio.health(http)
        if health["channels"][CHANNEL].get("turns", 0) == 0:
            async with http.post(f"{studio.url}/c/{CHANNEL}/chat", json={"text": LINE, "mode": "say"}) as res:
                await res.read()
        await asyncio.sleep(0.5)  # polling the studio's state, as a producer would


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = {
        "server": {"offers_per_minute": 100_000, "chats_per_minute": 100_000, "max_peers_per_client": 10_000,
                   "max_peers": max(200, args.viewers + 10)},
        "llm": {"backend": "none"},
        "channels": [{"name": CHANNEL, "video": {"width": args.size, "height": args.size}}],
    }  # fmt: skip
    steps = sorted({0, *(round(args.viewers * f) for f in (0.25, 0.5, 1.0))})
    levels: list[dict[str, Any]] = []
    viewers: list[CountingViewer] = []
    sse: list[SseClient] = []
    with ServeProcess(config, free_port()) as studio:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
            await studio.up(http)
            talker = asyncio.create_task(keep_talking(studio, http))
            try:
                for target in steps:
                    while len(viewers) < target:
                        viewer = CountingViewer(studio.url)
                        await viewer.connect()
                        viewers.append(viewer)
                    await asyncio.gather(*(asyncio.wait_for(v.connected.wait(), 60) for v in viewers))
                    levels.append(await measure(studio, http, viewers, sse, args.seconds))
                    print(f"  {levels[-1]}", file=sys.stderr, flush=True)
                sse.extend(SseClient(studio.url, http) for _ in range(args.sse))
                levels.append(await measure(studio, http, viewers, sse, args.seconds))
                print(f"  {levels[-1]}", file=sys.stderr, flush=True)
                studio.check()
            finally:
                talker.cancel()
                for client in sse:
                    client.task.cancel()
                await asyncio.gather(*(c.task for c in sse), return_exceptions=True)
                await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
    webrtc = [lv for lv in levels if lv["sse"] == 0]
    slope = float(np.polyfit([lv["viewers"] for lv in webrtc], [lv["cpu_cores"] for lv in webrtc], 1)[0])
    full = levels[-1]
    return {
        "levels": levels,
        "cpu_per_viewer_cores": round(slope, 5),
        "cpu_per_sse_client_cores": round((full["cpu_cores"] - webrtc[-1]["cpu_cores"]) / max(1, args.sse), 6),
        "holds_25_fps": full["fps"] >= 24.5 and full["fresh_pct"] >= 98,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--viewers", type=int, default=100)
    ap.add_argument("--sse", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=30.0, help="measuring window per level")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket per client, here and in the studio
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    for lv in result["levels"]:
        print(f"{lv['viewers']:4d} viewers, {lv['sse']:4d} SSE: studio CPU {lv['cpu_cores']:.2f} cores, "
              f"{lv['fps']:.1f} fps ({lv['fresh_pct']:.1f} % in time), {lv['viewer_packets_per_s']} packets/s "
              f"per viewer, {lv['sse_events']} SSE events")  # fmt: skip
    per_viewer, per_sse = result["cpu_per_viewer_cores"] * 1000, result["cpu_per_sse_client_cores"] * 1000
    print(f"CPU per viewer {per_viewer:.1f} millicores, per SSE client {per_sse:.2f} millicores; "
          f"holds 25 fps: {result['holds_25_fps']}")  # fmt: skip


if __name__ == "__main__":
    main()
