"""The public port against other web pages and greedy clients: JSON only, same origin only, a human
pace, a bounded number of peers; and secrets that never show anywhere."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import aiohttp
import pytest

from agents.config import parse_config
from tests.conftest import ServerThread, eventually, free_port, studio_config
from tests.viewer_client import AiortcViewer

SMALL = {"width": 128, "height": 128}
TRUSTED = "http://dock.example:8000"
SECRETS = {
    "AVATARCAST_TEST_RTMP_KEY": "live_rtmpkey_5f2c9a",
    "AVATARCAST_TEST_ADMIN": "admintoken-8d1e7b",
    "AVATARCAST_TEST_OBS": "obspassword-3a6f01",
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    os.environ.update(SECRETS)
    closed = free_port()  # nothing listens there: the RTMP output fails and says so in the log
    rtmp = {"rtmp": [{"url": f"rtmp://127.0.0.1:{closed}/live", "key": "env:AVATARCAST_TEST_RTMP_KEY"}]}
    cfg = studio_config(
        [{"name": "a", "video": SMALL, "outputs": rtmp}, {"name": "b", "video": SMALL}],
        trusted_origins=[TRUSTED],
        chats_per_minute=10,  # a burst of 2
        max_peers_per_client=1,
        admin_token="env:AVATARCAST_TEST_ADMIN",
    )
    obs = {"port": free_port(), "password": "env:AVATARCAST_TEST_OBS", "setup_at_start": True}
    cfg = parse_config({**cfg.model_dump(mode="json", exclude_none=True), "obs": obs}, "test config")
    srv = ServerThread(cfg).start()

    async def link() -> None:
        srv.front.start_obs_link()  # it will fail to reach OBS, and say so

    srv.call(link())
    yield srv
    srv.stop()


async def post(url: str, **kwargs) -> tuple[int, dict, dict]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http, http.post(url, **kwargs) as res:
        return res.status, await res.json(content_type=None), dict(res.headers)


async def test_another_page_cannot_make_the_avatar_speak(server: ServerThread) -> None:
    url, say = f"{server.url}/c/b/chat", '{"text": "the shoes are free", "mode": "say"}'
    # the attack as a browser sends it: a simple request, no pre-flight
    status, body, _ = await post(url, data=say, headers={"Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert status == 403 and "server.trusted_origins" in body["error"]
    status, body, _ = await post(url, data=say, headers={"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"})
    assert status == 403
    status, body, _ = await post(url, data=say, headers={"Content-Type": "text/plain"})  # same origin, not JSON
    assert status == 415 and "application/json" in body["error"]
    status, _, _ = await post(f"{server.url}/c/b/interrupt", headers={"Origin": "http://evil.example"}, json={})
    assert status == 403, "stopping the avatar is a change too"
    status, _, _ = await post(url, json={"text": "hello from the dock", "mode": "say"}, headers={"Origin": TRUSTED})
    assert status == 202, "a trusted origin (an OBS dock) may"
    status, _, _ = await post(url, json={"text": "hello from the page", "mode": "say"}, headers={"Origin": server.url})
    assert status in (202, 429), "its own page may (at a human pace: the burst is 2 a client)"


async def test_a_client_that_hurries_is_told_when_to_come_back(server: ServerThread) -> None:
    url = f"{server.url}/c/a/chat"
    statuses = []
    for _ in range(4):
        status, body, headers = await post(url, json={"text": "hi", "mode": "say"})
        statuses.append(status)
    assert statuses[-1] == 429 and int(headers["Retry-After"]) >= 1 and "try again in" in body["error"]


async def test_one_address_holds_a_bounded_number_of_viewers(server: ServerThread) -> None:
    first, second, third = (AiortcViewer(server.url, name) for name in ("a", "b", "b"))
    try:
        await first.connect()
        with pytest.raises(AssertionError, match="holds 1 viewers already"):
            await second.connect()
        await first.close()
        webrtc = server.studio.channels["a"].media.webrtc
        await eventually(lambda: not webrtc.viewers, 10, "the studio to see the peer close")
        await third.connect()  # a closed peer frees its place
    finally:
        for viewer in (first, second, third):
            await viewer.close()


async def test_secrets_never_show_in_pages_metrics_health_or_logs(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = SECRETS["AVATARCAST_TEST_ADMIN"]
    seen = []
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/healthz", "/metrics", "/c/a", "/c/a/info", "/c/zzz", "/admin/channels"):
            async with http.get(server.url + path, headers={"Authorization": f"Bearer {token}"}) as res:
                seen.append(await res.text())
        async with http.post(f"{server.url}/admin/channels", json={"name": "a"}, headers={"Authorization": "x"}) as res:
            seen.append(await res.text())
    health = seen[1]
    assert '"state": "connecting"' in health or "rtmp" in health, "the RTMP output is reported (failing)"
    text = "\n".join(seen) + caplog.text + repr(server.cfg) + str(server.cfg.model_dump(mode="json"))
    for name, value in SECRETS.items():
        assert value not in text, f"{name}'s value showed"
