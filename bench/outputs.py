"""Glass-to-glass latency of each output of a channel, and the CPU each extra output costs.

    python bench/outputs.py [--json] [--seconds 8] [--window 6]

The studio side runs in a child process: a channel built from the parts a real one uses (Program
-> its one ChannelEncoder -> WebRTC, MPEG-TS over HTTP, RTMP push), showing a still picture. Every
frame leaving the program carries the time it left (CLOCK_MONOTONIC, one clock for every process
on the machine) as 32 black/white blocks across its top (bench/frame_stamp.py). Receivers in this
process read the stamp of each frame as it is shown:
  webrtc  an aiortc viewer (tests/viewer_client.py), jitter buffer included
  rtmp    pushed to nginx-rtmp on 127.0.0.1 and played back with PyAV
  mpegts  GET /c/bench/stream.ts played with PyAV
  obs     OBS 29's Media Source on that stream (30 fps canvas), read with GetSourceScreenshot;
          the time of a shot is the middle of its request (the round trip is reported too)
CPU: the child's process CPU time per wall second with 0, 1, 2, 3 outputs of each kind; the cost
of an output is the slope. The receivers' own decoding runs in this process and is not counted.
JSON: webrtc_ms, rtmp_ms, mpegts_ms, obs_ms (p50 ms; obs_ms null with obs_skipped when OBS cannot
run here), latency {output: p50_ms, p95_ms, frames}, cpu_pct {kind: [0..3 outputs]},
cpu_per_output_pct (mean over kinds), cpu_per_output_pct_by_kind.
Run inside `unshare -n` (make bench does): OBS's websocket listens on every interface.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import tempfile
import threading
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the receivers and fixtures are the tests' real peers
from bench.frame_stamp import age_ms, draw_stamp, now_ms, read_stamp, stamp_rows  # noqa: E402
from stream.webrtc import restrict_host_candidates  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.obs_server import ObsStudio, outside_interfaces, screenshot  # noqa: E402
from tests.rtmp_server import NginxRtmp  # noqa: E402
from tests.viewer_client import AiortcViewer  # noqa: E402

SIZE, FPS = 512, 25
WARMUP_S = 1.0
"""Frames in the first second after a receiver starts are left out: players catch up from their probe."""


def _summary(ages: list[float]) -> dict[str, Any]:
    if not ages:
        return {"p50_ms": None, "p95_ms": None, "frames": 0}
    return {"p50_ms": round(float(np.percentile(ages, 50)), 1), "p95_ms": round(float(np.percentile(ages, 95)), 1),
            "frames": len(ages)}  # fmt: skip


# ---------------------------------------------------------------------- the studio side (child process)
class _StampedSink:
    """The program's sink: stamps each frame with the time it leaves, then hands it to the encoder."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        self.encoder.on_audio(pcm, sample)

    def on_video(self, image: np.ndarray, frame: int) -> None:
        image = image.copy()
        draw_stamp(image, now_ms())
        self.encoder.on_video(image, frame)

    async def ready(self) -> None:
        await self.encoder.ready()


class _StillSource:
    def __init__(self, image: np.ndarray) -> None:
        self.image = image

    async def render(self, first: int, cues: np.ndarray) -> np.ndarray:
        return np.repeat(self.image[None], len(cues), 0)

    def still(self) -> np.ndarray:
        return self.image


async def serve(port: int) -> None:
    import skimage.data
    from aiohttp import web

    from stream.clock import VideoFormat
    from stream.encoder import ChannelEncoder
    from stream.program import Program
    from stream.rtmp import RtmpOutput
    from stream.ts_stream import MpegTsServer
    from stream.webrtc import WebRTCEndpoint, restrict_host_candidates

    restrict_host_candidates(["127.0.0.1"])
    fmt = VideoFormat(SIZE, SIZE, FPS)
    encoder = ChannelEncoder(fmt, name="bench")
    program = Program(fmt, _StillSource(skimage.data.astronaut()), _StampedSink(encoder), name="bench")
    webrtc, ts, pushes = WebRTCEndpoint(encoder, name="bench"), MpegTsServer(), []

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        sdp, viewer = await webrtc.answer(body["sdp"], body["type"])
        return web.json_response({"sdp": sdp, "type": "answer", "viewer": viewer})

    async def stream_ts(request: web.Request) -> web.StreamResponse:
        return await ts.serve(request, encoder, "bench")

    async def push(request: web.Request) -> web.Response:
        output = RtmpOutput(encoder, (await request.json())["url"], name="bench")
        pushes.append((output, asyncio.create_task(output.run())))
        return web.json_response({"pushes": len(pushes)})

    async def stop_pushes(request: web.Request) -> web.Response:
        for _, task in pushes:
            task.cancel()
        await asyncio.gather(*(t for _, t in pushes), return_exceptions=True)
        pushes.clear()
        return web.json_response({"pushes": 0})

    async def cpu(request: web.Request) -> web.Response:
        rtmp = [o.state for o, _ in pushes]
        return web.json_response({"cpu_s": time.process_time(), "t": time.monotonic(), "rtmp": rtmp})

    app = web.Application()
    app.router.add_post("/c/bench/offer", offer)
    app.router.add_get("/c/bench/stream.ts", stream_ts)
    app.router.add_post("/bench/rtmp", push)
    app.router.add_post("/bench/rtmp/stop", stop_pushes)
    app.router.add_get("/bench/cpu", cpu)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    on_air = asyncio.create_task(program.run())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    ts.close()
    await stop_pushes(None)  # type: ignore[arg-type]
    on_air.cancel()
    await webrtc.aclose()
    await runner.cleanup()
    await encoder.aclose()


# ---------------------------------------------------------------------- receivers (this process)
class _AvStampReader:
    """Plays a URL with PyAV in a thread and keeps the age of every frame it decodes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ages: list[tuple[float, float]] = []  # (arrival monotonic s, age ms)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._play, daemon=True)
        self.thread.start()

    def _play(self) -> None:
        with contextlib.suppress(av.error.FFmpegError, OSError), av.open(self.url, timeout=(15, 5)) as container:
            container.streams.video[0].thread_type = "SLICE"  # frame threads would hold frames back
            for frame in container.decode(video=0):
                now = time.monotonic()
                age = age_ms(now * 1000, read_stamp(frame.to_ndarray(format="gray")))
                if age is not None:
                    self.ages.append((now, age))
                if self.stop.is_set():
                    return

    def close(self) -> list[float]:
        self.stop.set()
        self.thread.join(10)
        start = self.ages[0][0] + WARMUP_S if self.ages else 0.0
        return [age for t, age in self.ages if t >= start]


class _RawTsClient:
    """Takes a stream's bytes without decoding them: an output for the CPU count, not a measurement."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"GET /c/bench/stream.ts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.flowing = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while self.sock.recv(65536):
                self.flowing.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


async def _get(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as res:
        return await res.json()


async def webrtc_latency(base: str, seconds: float) -> list[float]:
    viewer = AiortcViewer(base, "bench", crop=(0, 0, SIZE, stamp_rows(SIZE)))
    await viewer.connect()
    await asyncio.sleep(seconds)  # the measuring window
    await viewer.close()
    start = viewer.got.video_times[0] + WARMUP_S
    seen = zip(viewer.got.video_times, viewer.got.frames, strict=True)
    ages = [(t, age_ms(t * 1000, read_stamp(crop))) for t, crop in seen]
    return [a for t, a in ages if a is not None and t >= start]


async def player_latency(url: str, seconds: float, before: Any = None) -> list[float]:
    reader = _AvStampReader(url)
    if before is not None:
        await before()  # RTMP: the player waits at nginx first, then the push starts
    await asyncio.sleep(seconds)
    return await asyncio.to_thread(reader.close)


async def obs_latency(base: str, seconds: float, work: Path) -> tuple[list[float], list[float]] | str:
    """(ages, screenshot round trips ms), or why OBS could not be measured."""
    if outside := outside_interfaces():
        return f"OBS's websocket listens on every interface; run inside `unshare -n` (seen: {', '.join(outside)})"
    from stream.obs import ChannelSource, ObsSetup, connect

    try:
        studio = ObsStudio(work, free_port(), fps=30)
        await asyncio.to_thread(studio.start)
    except BaseException as exc:  # pytest.fail from the fixture: OBS missing or not starting
        return f"OBS did not start: {exc}"
    name = "avatarcast bench"
    try:
        client = connect("127.0.0.1", studio.port, studio.password)
        source = ChannelSource("bench", f"{base}/c/bench", f"{base}/c/bench/stream.ts", SIZE, SIZE)
        ObsSetup(client).apply("bench", [source], "media")
        ages, trips, deadline, first = [], [], time.monotonic() + seconds + 20, None
        while time.monotonic() < deadline and (first is None or time.monotonic() < first + seconds):
            t0 = time.monotonic()
            shot = await asyncio.to_thread(screenshot, client, name, SIZE // 2, SIZE // 2)
            t1 = time.monotonic()
            age = age_ms((t0 + t1) / 2 * 1000, read_stamp(shot.mean(2)))
            if age is None:
                continue
            first = first or t1
            if t1 >= first + WARMUP_S:
                ages.append(age)
                trips.append((t1 - t0) * 1000)
        client.disconnect()
        return (ages, trips) if ages else "OBS never showed a readable frame"
    finally:
        await asyncio.to_thread(studio.close)


async def cpu_costs(base: str, port: int, ingest: NginxRtmp, window: float, most: int = 3) -> dict[str, list[float]]:
    """The child's CPU % with 0..most outputs of each kind."""
    out: dict[str, list[float]] = {}
    async with aiohttp.ClientSession() as http:

        async def measure() -> float:
            a = await _get(http, f"{base}/bench/cpu")
            await asyncio.sleep(window)
            b = await _get(http, f"{base}/bench/cpu")
            return round(100 * (b["cpu_s"] - a["cpu_s"]) / (b["t"] - a["t"]), 1)

        baseline = await measure()
        viewers = []
        out["webrtc"] = [baseline]
        for _ in range(most):
            viewers.append(AiortcViewer(base, "bench"))
            await viewers[-1].connect()
            out["webrtc"].append(await measure())
        for viewer in viewers:
            await viewer.close()
        out["rtmp"] = [await measure()]
        for i in range(most):
            async with http.post(f"{base}/bench/rtmp", json={"url": f"{ingest.app_url}/cpu{i}"}):
                pass
            for _ in range(150):  # until it is live (15 s at most)
                if (await _get(http, f"{base}/bench/cpu"))["rtmp"].count("live") > i:
                    break
                await asyncio.sleep(0.1)
            out["rtmp"].append(await measure())
        async with http.post(f"{base}/bench/rtmp/stop"):
            pass
        clients = []
        out["mpegts"] = [await measure()]
        for _ in range(most):
            clients.append(_RawTsClient(port))
            await asyncio.to_thread(clients[-1].flowing.wait, 10)
            out["mpegts"].append(await measure())
        for client in clients:
            client.close()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    restrict_host_candidates(["127.0.0.1"])  # the viewers here offer loopback, as the studio does
    child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", str(port), stdout=PIPE)
    work = Path(tempfile.mkdtemp(prefix="bench-outputs-"))
    ingest = NginxRtmp(work, free_port())
    try:
        async with asyncio.timeout(60):
            line = await child.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == b"ready", f"the stamped channel did not start: {line!r}"
        ingest.start()
        latency: dict[str, list[float]] = {"webrtc": await webrtc_latency(base, args.seconds)}

        async def push() -> None:
            url = f"{ingest.app_url}/bench"
            async with aiohttp.ClientSession() as http, http.post(f"{base}/bench/rtmp", json={"url": url}):
                pass

        latency["rtmp"] = await player_latency(f"{ingest.app_url}/bench", args.seconds, push)
        async with aiohttp.ClientSession() as http, http.post(f"{base}/bench/rtmp/stop"):
            pass
        latency["mpegts"] = await player_latency(f"{base}/c/bench/stream.ts", args.seconds)
        obs = await obs_latency(base, args.seconds, work)
        cpu = await cpu_costs(base, port, ingest, args.window)
    finally:
        child.terminate()
        await child.wait()
        ingest.kill()
    result: dict[str, Any] = {"latency": {k: _summary(v) for k, v in latency.items()}}
    if isinstance(obs, str):
        result["obs_skipped"] = obs
    else:
        result["latency"]["obs"] = _summary(obs[0])
        result["obs_screenshot_round_trip_ms"] = round(float(np.median(obs[1])), 1)
    for kind in ("webrtc", "rtmp", "mpegts", "obs"):
        result[f"{kind}_ms"] = result["latency"].get(kind, {}).get("p50_ms")
    slopes = {k: round(float(np.polyfit(range(len(v)), v, 1)[0]), 2) for k, v in cpu.items()}
    result.update(cpu_pct=cpu, cpu_per_output_pct_by_kind=slopes)
    result["cpu_per_output_pct"] = round(float(np.mean(list(slopes.values()))), 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seconds", type=float, default=8.0, help="measuring window per output")
    ap.add_argument("--window", type=float, default=6.0, help="CPU measuring window per output count")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child: the stamped channel on this port
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    print("glass-to-glass latency (frame leaves the program -> frame shown), ms:")
    for kind, s in result["latency"].items():
        print(f"  {kind:7s} p50 {s['p50_ms']}  p95 {s['p95_ms']}  ({s['frames']} frames)")
    if "obs_skipped" in result:
        print(f"  obs     not measured: {result['obs_skipped']}")
    else:
        print(f"  (obs: screenshot round trip {result['obs_screenshot_round_trip_ms']} ms, its middle taken)")
    print("studio process CPU % with 0, 1, 2, 3 outputs:")
    for kind, series in result["cpu_pct"].items():
        print(f"  {kind:7s} {series}  -> {result['cpu_per_output_pct_by_kind'][kind]} % per output")
    print(f"cpu_per_output_pct (mean over kinds): {result['cpu_per_output_pct']}")


if __name__ == "__main__":
    main()
