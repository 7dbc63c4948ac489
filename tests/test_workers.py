"""A studio of two media worker processes behind one port: placement, routing, and a worker killed.

Real processes throughout: the front in this process (on its own loop in a thread), two
`agents.worker.process` workers it starts, a Chromium viewer and an aiortc viewer through the one
public port.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import ServerThread, chromium_driver, eventually, studio_config
from tests.viewer_client import AiortcViewer

pytestmark = pytest.mark.slow

FPS = 25
PAGE_BACK_LIMIT_S = 40.0
"""After that, the page on it is connected to it again (2 s of "disconnected", then a new offer)."""
BACK_ON_AIR_LIMIT_S = 30.0
"""A killed worker's channels are back on air within this (measured here: ~6 s, most of it loading
Whisper and Piper in the new process)."""


@pytest.fixture(scope="module")
def studio() -> Any:
    cfg = studio_config(
        [
            {"name": "a", "video": {"width": 256, "height": 256}},
            {"name": "b", "video": {"width": 256, "height": 256}},
        ],
        workers=2,
    )
    server = ServerThread(cfg).start()
    yield server
    server.stop()


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
        assert response.status == 200
        return await response.json()


async def post(url: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}{path}", json=body) as response:
        return response.status, await response.json()


async def events_until(url: str, channel: str, wanted: Any, limit_s: float) -> list[dict[str, Any]]:
    """Read the channel's event stream (through the front) until `wanted(events)` holds."""
    seen: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(limit_s),
        aiohttp.ClientSession() as http,
        http.get(f"{url}/c/{channel}/events") as response,
    ):
        async for raw in response.content:
            if raw.startswith(b"data: "):
                seen.append(json.loads(raw[6:]))
                if wanted(seen):
                    return seen
    return seen


def page_state(driver: Any) -> dict[str, Any]:
    return driver.execute_script("return Object.assign({}, window.avatarcast && window.avatarcast.state)")


async def test_channels_of_two_workers_play_and_answer_through_one_port(studio: ServerThread) -> None:
    h = await health(studio.url)
    workers = {name: c["worker"] for name, c in h["channels"].items()}
    assert set(workers) == {"a", "b"}
    assert workers["a"]["pid"] != workers["b"]["pid"], "each channel has its own worker process"
    assert os.getpid() not in {w["pid"] for w in workers.values()}, "neither runs in the front's process"
    assert sorted(w["index"] for w in h["workers"]) == [0, 1] and all(w["state"] == "up" for w in h["workers"])

    viewer = AiortcViewer(studio.url, "a")
    try:
        await viewer.connect()
        with chromium_driver() as driver:
            driver.get(f"{studio.url}/c/b")
            await eventually(lambda: page_state(driver).get("connection") == "connected", 30, "the page's peer")
            await eventually(lambda: page_state(driver).get("framesDecoded", 0) > 10, 20, "the page's first frames")
            t0, aiortc_frames, aiortc_audio = time.monotonic(), len(viewer.got.video_times), len(viewer.got.audio_times)
            page_frames = page_state(driver)["framesDecoded"]
            await asyncio.sleep(4.0)
            elapsed = time.monotonic() - t0
            page_rate = (page_state(driver)["framesDecoded"] - page_frames) / elapsed
        video_rate = (len(viewer.got.video_times) - aiortc_frames) / elapsed
        audio_rate = (len(viewer.got.audio_times) - aiortc_audio) / elapsed
        assert video_rate >= 0.9 * FPS, f"the aiortc viewer of a got {video_rate:.1f} fps"
        assert audio_rate >= 0.9 * 50, f"the aiortc viewer of a got {audio_rate:.1f} audio packets/s"
        assert page_rate >= 0.9 * FPS, f"the Chromium viewer of b decoded {page_rate:.1f} fps"
    finally:
        await viewer.close()

    for channel, mode in (("a", "ask"), ("b", "say")):  # the answer comes back on the event stream, through the front
        listening = asyncio.create_task(
            events_until(studio.url, channel, lambda seen: any(e["type"] == "caption" for e in seen), 30)
        )
        await asyncio.sleep(0.3)
        status, body = await post(studio.url, f"/c/{channel}/chat", {"text": "Hello to the other worker", "mode": mode})
        assert status == 202, body
        seen = await listening
        assert any(e["type"] == "caption" and e["turn"] == body["turn"] for e in seen), seen

    async with aiohttp.ClientSession() as http, http.get(f"{studio.url}/c/b/stream.ts") as response:
        assert response.status == 200 and (await response.content.readexactly(188))[0] == 0x47
    async with aiohttp.ClientSession() as http, http.get(f"{studio.url}/metrics") as response:
        text = await response.text()
    assert 'avatarcast_video_frames_total{channel="a",worker="' in text
    assert {f'avatarcast_worker_up{{worker="{i}"}} 1.0' in text for i in (0, 1)} == {True}


async def test_a_killed_worker_comes_back_and_the_other_never_notices(studio: ServerThread) -> None:
    shm_before = set(os.listdir("/dev/shm"))
    h = await health(studio.url)
    victim, other = h["channels"]["a"]["worker"], h["channels"]["b"]["worker"]
    frames_before, measured_from = h["channels"]["b"]["program"]["video_frames"], time.monotonic()
    with chromium_driver() as driver:
        driver.get(f"{studio.url}/c/a")
        await eventually(lambda: page_state(driver).get("connection") == "connected", 30, "the page's peer")
        t0 = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)

        async def back_on_air() -> bool:
            channels = (await health(studio.url))["channels"]
            a = channels.get("a")
            return bool(a) and a["worker"]["pid"] != victim["pid"] and a["program"].get("video_frames", 0) > 25

        deadline = t0 + BACK_ON_AIR_LIMIT_S
        while not await back_on_air():
            assert time.monotonic() < deadline, (
                f"channel a not back on air {BACK_ON_AIR_LIMIT_S} s after its worker died"
            )
            await asyncio.sleep(0.25)
        back_s = time.monotonic() - t0
        h = await health(studio.url)
        elapsed = time.monotonic() - measured_from
        frames = h["channels"]["b"]["program"]["video_frames"] - frames_before
        assert h["channels"]["b"]["worker"] == other, "the other worker kept running"
        assert frames >= 0.98 * FPS * elapsed - 5, f"b sent {frames} frames in {elapsed:.1f} s meanwhile"
        assert h["channels"]["b"]["encoder"].get("video_dropped", 0) == 0
        # the page reconnects by itself to the channel's new worker
        # (the new worker counts its viewers from v1 again: a reconnect shows in the page's errors)
        deadline = time.monotonic() + PAGE_BACK_LIMIT_S
        while not (state := page_state(driver))["errors"] or state["connection"] != "connected":
            assert time.monotonic() < deadline, f"the page did not reconnect to channel a: {state}"
            await asyncio.sleep(0.25)
        decoded = state["framesDecoded"]
        await eventually(lambda: page_state(driver)["framesDecoded"] > decoded + 25, 10, "frames from the new worker")
    print(f"channel a back on air {back_s:.1f} s after its worker was killed")
    assert set(os.listdir("/dev/shm")) == shm_before, "nothing left in /dev/shm by the killed worker"
