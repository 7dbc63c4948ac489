"""The studio page: behind the admin token, every channel live with its picture, numbers and buttons.

Real studios (one worker in this process; two worker processes for the remote calls), real
headless Chromium logging in through the form, real HTTP clients for what a script or an
attacker would send. Screenshots land in the test's tmp dir (their paths are printed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from agents.front.history import StudioHistory
from agents.front.sessions import Sessions
from agents.front.studio_page import FEED
from tests.conftest import ServerThread, chromium_driver, eventually, studio_config
from tests.viewer_client import AiortcViewer

TOKEN_ENV = "AVATARCAST_STUDIO_PAGE_TOKEN"
TOKEN = "studio-page-token-4f9c2e71b8"
SIZE = 128


def _config(channels: list[dict[str, Any]], **server: Any) -> Any:
    cfg = studio_config(channels, admin_token=f"env:{TOKEN_ENV}", **server)
    # the loop-lag rule is not what these tests are about, and pytest's own threads share the loop's GIL
    return cfg.model_copy(update={"admission": cfg.admission.model_copy(update={"max_loop_lag_ms": 5000.0})})


@pytest.fixture()
def studio(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    channels = [{"name": name, "video": {"width": SIZE, "height": SIZE}} for name in ("alpha", "beta")]
    channels[1]["outputs"] = {"burn_in_captions": True}  # its thumbnails pass the caption burner, as viewers see
    srv = ServerThread(_config(channels)).start()
    yield srv
    srv.stop()


async def _call(url: str, method: str, path: str, *, token: str | None = None, **kw: Any) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "POST" and "json" not in kw:
        kw["json"] = {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, headers=headers, allow_redirects=False, **kw) as res,
    ):
        body = await res.read()
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = body
        return res.status, data, res.headers


# ---------------------------------------------------------------------- refused without the token
async def test_without_the_token_the_page_and_its_api_are_refused(
    studio: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = studio.url
    status, _, headers = await _call(url, "GET", "/studio")
    assert status == 303 and headers["Location"] == "/studio/login"
    status, form, _ = await _call(url, "GET", "/studio/login")
    assert status == 200 and b"alpha" not in form and b"beta" not in form  # no channel shown before the login
    for token in (None, "wrong", TOKEN + "x"):
        for method, path in (
            ("GET", "/studio/api/state"), ("GET", "/studio/api/history"), ("GET", "/studio/api/events"),
            ("GET", "/studio/api/thumb/alpha"), ("POST", "/studio/api/channels/alpha/pause"),
            ("POST", "/studio/api/channels/alpha/say"), ("DELETE", "/studio/api/channels/alpha"),
            ("POST", "/studio/api/channels"),
        ):  # fmt: skip
            status, body, _ = await _call(url, method, path, token=token)
            assert status == 401, (method, path, token, status)
            assert "alpha" not in json.dumps(body)
        status, _, _ = await _call(url, "GET", "/studio/studio.js", token=token)
        assert status == 303
    for path in ("/static/studio.js", "/static/studio.html", "/static/studio.css"):  # not public as static files
        assert (await _call(url, "GET", path))[0] == 404
    assert not studio.studio.channels["alpha"].conversation.paused  # nothing was changed
    assert "alpha" in studio.front.where

    # a wrong login is refused; a right one opens a session held in an HttpOnly, SameSite=Strict cookie
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # unsafe: an IP host
        async with http.post(url + "/studio/login", json={"token": "nope"}) as res:
            assert res.status == 401
        async with http.post(url + "/studio/login", json={"token": TOKEN}) as res:
            assert res.status == 200
            cookie = res.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/studio" in cookie
            assert TOKEN not in cookie
        async with http.get(url + "/studio/api/state") as res:
            assert res.status == 200 and set((await res.json())["channels"]) == {"alpha", "beta"}
        async with http.get(url + "/studio", allow_redirects=False) as res:
            assert res.status == 200 and TOKEN not in await res.text()
        async with http.post(url + "/studio/logout", json={}) as res:
            assert res.status == 200
        async with http.get(url + "/studio/api/state") as res:
            assert res.status == 401  # the session is gone on the server, whatever the browser kept
    assert TOKEN not in caplog.text


async def test_the_page_is_not_there_without_an_admin_token() -> None:
    srv = ServerThread(studio_config([{"name": "solo", "video": {"width": SIZE, "height": SIZE}}])).start()
    try:
        for path in ("/studio", "/studio/login", "/studio/api/state"):
            status, body, _ = await _call(srv.url, "GET", path)
            assert status == 404 and "admin_token" in body["error"]
    finally:
        srv.stop()


# ---------------------------------------------------------------------- the API a script uses
async def test_api_state_history_events_and_buttons(studio: ServerThread) -> None:
    url = studio.url
    status, state, _ = await _call(url, "GET", "/studio/api/state", token=TOKEN)
    assert status == 200 and set(state["channels"]) == {"alpha", "beta"}
    strip = state["strip"]
    assert strip["gpus"] is None  # this machine has none
    assert strip["capacity"]["cpu_limit"] > 0 and strip["llm_backend"] == "none"
    assert state["channels"]["alpha"]["av_offset_ms"] is None  # not measured yet: never derived

    status, jpeg, headers = await _call(url, "GET", "/studio/api/thumb/alpha", token=TOKEN)
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
    assert (await _call(url, "GET", "/studio/api/thumb/nope", token=TOKEN))[0] == 404

    status, body, _ = await _call(url, "POST", "/studio/api/channels/alpha/say", token=TOKEN,
                                  json={"text": "Testing the studio page, one two three."})  # fmt: skip
    assert status == 202, body
    turn = body["turn"]

    async def history() -> dict[str, Any]:
        return (await _call(url, "GET", "/studio/api/history", token=TOKEN))[1]

    feed = studio.runner.app[FEED]
    await eventually(lambda: any(a["key"].endswith("/" + turn) for a in list(feed.history.answers)), 30,
                     "the said line in the studio's history")  # fmt: skip
    answer = next(a for a in (await history())["answers"] if a["key"].endswith("/" + turn))
    assert answer["channel"] == "alpha" and answer["source"] == "studio" and answer["from"] == "created"
    assert 0 < answer["latency_ms"] < 10_000
    fps = (await history())["channels"]["alpha"]["fps"]
    assert fps and 15 < [v for v in fps if v is not None][-1] < 35

    # the SSE stream brings a new sample with a point for the plots
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + "/studio/api/events", headers={"Authorization": f"Bearer {TOKEN}"}) as res,
    ):
        assert res.headers["Content-Type"].startswith("text/event-stream")
        async for raw in res.content:
            if raw.startswith(b"data: "):
                message = json.loads(raw[6:])
                break
    assert set(message["state"]["channels"]) == {"alpha", "beta"} and "alpha" in message["point"]["channels"]
    assert any(a["key"].endswith("/" + turn) for a in message["answers"])

    status, body, _ = await _call(url, "POST", "/studio/api/channels/alpha/say", token=TOKEN, json={"text": ""})
    assert status == 400
    status, body, _ = await _call(url, "POST", "/studio/api/channels/alpha/pause", token=TOKEN)
    assert status == 200 and body["state"] == "paused"
    status, body, _ = await _call(url, "POST", "/studio/api/channels/alpha/say", token=TOKEN, json={"text": "hi"})
    assert status == 409 and "paused" in body["error"]
    status, body, _ = await _call(url, "POST", "/studio/api/channels/alpha/resume", token=TOKEN)
    assert status == 200 and body["state"] == "on_air"
    status, body, _ = await _call(url, "POST", "/studio/api/channels/alpha/say", token=TOKEN,
                                  json={"text": "A long line to skip, it goes on and on, and on."})  # fmt: skip
    assert status == 202
    long_turn = body["turn"]
    status, body, _ = await _call(url, "POST", "/studio/api/channels/alpha/skip", token=TOKEN)
    assert status == 200 and long_turn in body["stopped"]
    await eventually(lambda: not studio.studio.channels["alpha"].conversation.turns, 10, "the skipped line to stop")

    # with a viewer watching, the card shows the A/V offset measured as its packets leave
    viewer = AiortcViewer(url, "alpha")
    try:
        await viewer.connect()

        async def offset() -> float | None:
            return (await _call(url, "GET", "/studio/api/state", token=TOKEN))[1]["channels"]["alpha"]["av_offset_ms"]

        deadline = time.monotonic() + 20
        while (measured := await offset()) is None:
            assert time.monotonic() < deadline, "no measured A/V offset 20 s after a viewer joined"
            seen = len(viewer.got.video_pts)
            await viewer.until(lambda g, seen=seen: len(g.video_pts) > seen + 5, 10, "more frames")
        assert abs(measured) <= 40, measured
    finally:
        await viewer.close()


# ---------------------------------------------------------------------- headless Chromium
def _thumb_hash(driver: Any, name: str) -> list[int]:
    """(width, a hash of the pixels) of the card's thumbnail as the page shows it."""
    return driver.execute_script(
        "const img = document.querySelector(`article[data-channel='${arguments[0]}'] img.thumb`);"
        "if (!img || !img.complete || !img.naturalWidth) return [0, 0];"
        "const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;"
        "const g = c.getContext('2d'); g.drawImage(img, 0, 0);"
        "const d = g.getImageData(0, 0, c.width, c.height).data; let h = 0;"
        "for (let i = 0; i < d.length; i += 4) h = (h * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) >>> 0;"
        "return [img.naturalWidth, h];",
        name,
    )


def _card(driver: Any, name: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f"article[data-channel='{name}']")


@pytest.mark.browser
def test_chromium_logs_in_watches_pauses_and_adds_a_channel(studio: ServerThread, tmp_path: Path) -> None:
    shots = []

    def shot(driver: Any, name: str) -> None:
        driver.execute_script("window.scrollTo(0, 0)")
        path = tmp_path / f"studio-{len(shots) + 1}-{name}.png"
        driver.save_screenshot(str(path))
        shots.append(path)
        print(f"screenshot: {path}")

    with chromium_driver() as driver:
        driver.set_window_size(1400, 1600)  # the whole page in each screenshot
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        driver.get(f"{studio.url}/studio")
        wait.until(lambda d: d.current_url.endswith("/studio/login"))  # no session: the login form
        assert not driver.find_elements(By.CSS_SELECTOR, "article[data-channel]")
        driver.find_element(By.ID, "token").send_keys("not the token")
        driver.find_element(By.ID, "enter").click()
        wait.until(lambda d: "not the studio's admin token" in d.find_element(By.ID, "login-error").text)
        shot(driver, "login-refused")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "enter").click()
        wait.until(lambda d: d.current_url.endswith("/studio"))
        assert TOKEN not in driver.current_url and TOKEN not in driver.page_source
        cookie = driver.get_cookie("avatarcast_studio")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert driver.execute_script("return document.cookie") == ""  # scripts cannot read the session

        # every channel, each with a live picture that changes
        wait.until(lambda d: {c.get_attribute("data-channel") for c in d.find_elements(By.CSS_SELECTOR, "article.card")}
                   == {"alpha", "beta"})  # fmt: skip
        wait.until(lambda d: "live" in d.find_element(By.ID, "status").text)
        for name in ("alpha", "beta"):
            wait.until(lambda d, name=name: _thumb_hash(d, name)[0] > 0)
        card = _card(driver, "alpha")
        card.find_element(By.CSS_SELECTOR, ".say-text").send_keys("Hello from the studio page, watch my mouth move!")
        card.find_element(By.CSS_SELECTOR, ".say-send").click()
        first = _thumb_hash(driver, "alpha")
        wait.until(lambda d: _thumb_hash(d, "alpha") not in (first, [0, 0]))
        wait.until(
            lambda d: "Hello from the studio page" in _card(d, "alpha").find_element(By.CSS_SELECTOR, ".answers").text
        )
        wait.until(lambda d: _card(d, "alpha").find_element(By.CSS_SELECTOR, ".fps").text not in ("", "–"))
        assert _card(driver, "alpha").find_element(By.CSS_SELECTOR, ".avoffset").text == "not measured yet"
        assert "no GPU found" in driver.find_element(By.ID, "strip-gpu").text
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot-fps path.series"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot-latency circle, #plot-latency rect"))
        shot(driver, "live")

        # pause: the card says so, and the channel's viewer page stops answering chat
        _card(driver, "alpha").find_element(By.CSS_SELECTOR, "button.pause").click()
        wait.until(lambda d: _card(d, "alpha").get_attribute("data-state") == "paused")
        assert "paused" in _card(driver, "alpha").find_element(By.CSS_SELECTOR, ".state").text
        status, body, _ = asyncio.run(_call(studio.url, "POST", "/c/alpha/chat", json={"text": "hi", "mode": "say"}))
        assert status == 409 and "paused" in body["error"]
        status, _, _ = asyncio.run(_call(studio.url, "POST", "/c/beta/chat", json={"text": "hi", "mode": "say"}))
        assert status == 202  # the other channel still answers
        shot(driver, "paused")

        # add a channel with the form: its card appears, with a picture
        driver.find_element(By.ID, "add-name").send_keys("gamma")
        size = driver.find_element(By.ID, "add-size")
        size.clear()
        size.send_keys(str(SIZE))
        driver.find_element(By.ID, "add-submit").click()
        WebDriverWait(driver, 90, poll_frequency=0.2).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "article[data-channel='gamma']")
        )
        wait.until(lambda d: _thumb_hash(d, "gamma")[0] > 0)
        assert "gamma" in studio.front.where
        driver.find_element(By.ID, "add-name").send_keys("Bad Name!")
        driver.find_element(By.ID, "add-submit").click()
        wait.until(lambda d: "channel name" in d.find_element(By.ID, "add-result").text)  # the config's own check
        shot(driver, "added")
    assert all(path.stat().st_size > 1000 for path in shots)


# ---------------------------------------------------------------------- several worker processes
@pytest.mark.slow
async def test_thumbnails_telemetry_and_buttons_through_worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    channels = [{"name": name, "video": {"width": SIZE, "height": SIZE}} for name in ("east", "west")]
    srv = ServerThread(_config(channels, workers=2)).start()
    try:
        url = srv.url
        status, state, _ = await _call(url, "GET", "/studio/api/state", token=TOKEN)
        assert status == 200 and set(state["channels"]) == {"east", "west"}
        assert {ch["worker"] for ch in state["channels"].values()} == {0, 1}
        assert len(state["strip"]["workers"]) == 2
        for name in ("east", "west"):
            status, jpeg, _ = await _call(url, "GET", f"/studio/api/thumb/{name}", token=TOKEN)
            assert status == 200 and jpeg[:2] == b"\xff\xd8", (name, status)
        status, body, _ = await _call(url, "POST", "/studio/api/channels/west/say", token=TOKEN,
                                      json={"text": "Hello from the other process."})  # fmt: skip
        assert status == 202 and body["turn"].startswith("west-")
        feed = srv.runner.app[FEED]
        await eventually(lambda: any(a["channel"] == "west" for a in list(feed.history.answers)), 30,
                         "the worker process's answer in the studio's history")  # fmt: skip
        history = (await _call(url, "GET", "/studio/api/history", token=TOKEN))[1]
        assert any(a["channel"] == "west" and a["source"] == "studio" for a in history["answers"])
        status, _, _ = await _call(url, "POST", "/studio/api/channels/west/pause", token=TOKEN)
        assert status == 200
        status, body, _ = await _call(url, "POST", "/studio/api/channels/west/say", token=TOKEN, json={"text": "x"})
        assert status == 409 and "paused" in body["error"]
        status, body, _ = await _call(url, "POST", "/studio/api/channels/west/skip", token=TOKEN)
        assert status == 200 and isinstance(body["stopped"], list)

    finally:
        srv.stop()


# ---------------------------------------------------------------------- the parts on their own
def test_history_rates_counter_resets_window_and_each_answer_once() -> None:
    history = StudioHistory(window_s=10)

    def frames(n: int, late: int = 0) -> dict[str, Any]:
        return {"a": {"program": {"video_frames": n, "late_frames": late}}}

    assert history.add_channels(100.0, frames(0)) == {}  # a rate needs two readings
    assert history.add_channels(101.0, frames(25, 1)) == {"a": {"fps": 25.0, "late": 1.0}}
    assert history.add_channels(102.0, frames(3)) == {}  # the worker restarted: counters start again
    assert history.add_channels(104.0, frames(53, 2)) == {"a": {"fps": 25.0, "late": 1.0}}
    answer = {"turn": "a-1", "at": 104.0, "latency_ms": 640, "from": "speech_end", "source": "voice", "kind": "answer"}
    assert len(history.add_answers(7, "a", [answer])) == 1
    assert history.add_answers(7, "a", [answer]) == []  # seen: not added twice
    assert len(history.add_answers(8, "a", [answer])) == 1  # another worker process: another turn
    history.trim(112.0)  # an hour is 10 s here: the point at 101 s is out of the window, 104 s is not
    assert history.to_json()["channels"]["a"]["t"] == [104.0] and len(history.to_json()["answers"]) == 2
    history.trim(120.0)
    assert history.to_json()["channels"] == {} and history.to_json()["answers"] == []


def test_sessions_expire_and_stay_bounded() -> None:
    from agents.config import ServerConfig
    from agents.front import sessions as sessions_module

    now = [0.0]
    sessions = Sessions(ServerConfig(), clock=lambda: now[0])
    first = sessions.open()
    assert sessions.valid(first) and not sessions.valid("forged") and not sessions.valid(None)
    now[0] = sessions_module.SESSION_TTL_S + 1
    assert not sessions.valid(first)
    opened = [sessions.open() for _ in range(sessions_module.MAX_SESSIONS + 5)]
    assert not sessions.valid(opened[0]) and sessions.valid(opened[-1])
    sessions.close(opened[-1])
    assert not sessions.valid(opened[-1])
