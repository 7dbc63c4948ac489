"""The A/V offset is measured where the packets leave, and a real viewer's RTCP agrees with it.

A real channel and a real aiortc viewer that taps the RTP timestamps and RTCP sender reports it
receives (tests/viewer_client.py SenderReports). The offset the channel publishes (healthz,
/metrics, the studio page) must be the one the viewer works out, and it must move when one
stream leaves late, which an offset derived from the program's own positions never did.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from fractions import Fraction

import aiohttp
import av
import pytest

from stream.send_timing import MIN_PACKETS, SendTiming
from tests.conftest import ServerThread, eventually, studio_config
from tests.viewer_client import AiortcViewer, av_offset_from_reports

VIDEO_DELAY_S = 0.15
AGREE_S = 0.015
"""The viewer's figure and the channel's agree within this: sender reports carry the time after the
packet's send, the channel's the time aiortc took it; both within a few ms on loopback."""


def _packet(pts: int, time_base: Fraction) -> av.Packet:
    packet = av.Packet(b"\0")
    packet.pts, packet.time_base = pts, time_base
    return packet


def test_offset_is_audio_lateness_minus_video_lateness() -> None:
    now = [100.0]
    timing = SendTiming(clock=lambda: now[0], window_s=2.0)
    for i in range(MIN_PACKETS - 1):
        timing.sent("audio", _packet(960 * i, Fraction(1, 48_000)))
        timing.sent("video", _packet(i, Fraction(1, 25)))
    assert timing.offset_s() is None  # too few packets yet
    for i in range(50):  # video leaves 30 ms after its time, audio 10 ms after
        now[0] = 200.0 + i * 0.04
        timing.sent("audio", _packet(round((now[0] - 0.01) * 48_000), Fraction(1, 48_000)))
        timing.sent("video", _packet(round((now[0] - 0.03) * 90_000), Fraction(1, 90_000)))
    assert timing.offset_s() == pytest.approx(-0.02, abs=1e-3)  # the voice 20 ms ahead of the picture
    assert timing.first_pts_s == {"audio": 0.0, "video": 0.0}
    now[0] += 10  # nothing sent for longer than the window: no figure rather than a stale one
    assert timing.offset_s() is None and timing.to_json()["av_offset_ms"] is None


class DelayLine:
    """Stands in for a viewer track's packet queue and hands each packet out `delay` seconds after it
    came: one stream leaving late, at its full rate."""

    def __init__(self, inner, delay: float) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.delay = inner, delay
        self.held: deque[tuple[float, av.Packet]] = deque()
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._pull())

    async def _pull(self) -> None:
        while True:
            packet = await self.inner.get()
            self.held.append((time.monotonic() + self.delay, packet))
            self.ready.set()

    async def get(self) -> av.Packet:
        while not self.held:
            self.ready.clear()
            await self.ready.wait()
        due, packet = self.held.popleft()
        await asyncio.sleep(max(0.0, due - time.monotonic()))  # the delay being simulated
        return packet

    def close(self) -> None:
        self.task.cancel()
        self.inner.close()


async def test_a_viewer_measures_the_published_offset_and_both_follow_a_late_stream() -> None:
    srv = ServerThread(studio_config([{"name": "sync", "video": {"width": 256, "height": 256}}])).start()
    channel = srv.studio.channels["sync"]
    viewer = AiortcViewer(srv.url, "sync")
    try:
        await viewer.connect()
        reports = viewer.reports

        def published() -> dict:  # type: ignore[type-arg]
            return srv.call(_stats(channel))["viewer_sync"][viewer.viewer_id]

        await viewer.until(
            lambda _: min(len(r.reports) for r in reports.values()) >= 4, 30, "four sender reports of each stream"
        )
        await eventually(lambda: published()["av_offset_ms"] is not None, 10, "the channel's figure")
        sync = published()
        ours = av_offset_from_reports(reports["audio"], reports["video"], sync["first_pts_s"])
        assert ours is not None
        theirs = sync["av_offset_ms"] / 1000
        print(f"A/V offset: channel {theirs * 1000:+.1f} ms, viewer from RTCP {ours * 1000:+.1f} ms")
        assert abs(theirs) <= 0.04 and abs(ours) <= 0.04
        assert abs(ours - theirs) <= AGREE_S

        # the picture leaves 150 ms late from now on: both figures follow, within the same bounds
        track = next(t for t in channel.media.webrtc.viewers[viewer.viewer_id].tracks if t.kind == "video")

        async def delay_video() -> None:  # on the send loop, where the viewer's track reads its queue
            track.queue = DelayLine(track.queue, VIDEO_DELAY_S)  # type: ignore[assignment]

        send = channel.media.webrtc.send
        asyncio.run_coroutine_threadsafe(delay_video(), send.loop).result(5)
        changed = time.monotonic()
        await eventually(
            lambda: published()["av_offset_ms"] < -(VIDEO_DELAY_S - AGREE_S) * 1000, 20, "the channel to see it"
        )
        settled = time.monotonic()
        await viewer.until(
            lambda _: min(sum(1 for r in rep.reports if r[0] >= settled) for rep in reports.values()) >= 3,
            30,
            "three new sender reports of each stream",
        )
        late = av_offset_from_reports(reports["audio"], reports["video"], sync["first_pts_s"], since=settled)
        late_theirs = published()["av_offset_ms"] / 1000
        print(f"video late: channel {late_theirs * 1000:+.1f} ms, viewer {late * 1000:+.1f} ms")
        assert late is not None and settled - changed < 20
        assert abs(late - (ours - VIDEO_DELAY_S)) <= AGREE_S
        assert abs(late_theirs - late) <= AGREE_S

        async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/metrics") as res:
            text = await res.text()
        gauge = next(ln for ln in text.splitlines() if ln.startswith('avatarcast_av_offset_seconds{channel="sync"'))
        assert float(gauge.rsplit(" ", 1)[1]) == pytest.approx(late_theirs, abs=AGREE_S)
    finally:
        await viewer.close()
        srv.stop()


async def _stats(channel) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return channel.media.stats()


@pytest.mark.slow
def test_the_soak_bench_runs_and_reports_its_figures() -> None:
    """bench/soak.py, briefly: a real `avatarcast serve`, a viewer, the figures it promises (the hour-long
    run and its goals are the bench's, not the suite's)."""
    import json
    import subprocess
    import sys

    from models.defaults import PROJECT_ROOT

    command = [sys.executable, "bench/soak.py", "--minutes", "0.25", "--channels", "1", "--size", "256",
               "--sample-s", "5", "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) >= {"processes", "deadline_misses", "frames_received_pct", "av_offset_ms", "goals"}
    front = result["processes"]["front"]
    assert len(front["rss_mb"]) == len(result["samples"]) >= 2 and front["fds_first"] > 0
    assert result["frames_received_pct"] > 80
    assert abs(result["av_offset_ms"]["viewer"]["last"]) <= 40
    assert abs(result["av_offset_ms"]["viewer"]["last"] - result["av_offset_ms"]["published"]["last"]) <= 15
