"""Bad input gets a clear 4xx and leaves every other channel untouched."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.conftest import ServerThread, studio_config
from tests.viewer_client import AiortcViewer

SMALL = {"width": 256, "height": 256}


@pytest.fixture(scope="module")
def server():
    srv = ServerThread(studio_config([{"name": "a", "video": SMALL}, {"name": "b", "video": SMALL}])).start()
    yield srv
    srv.stop()


VALID_SDP_HEAD = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
BAD_OFFERS = [
    pytest.param({"sdp": "hello", "type": "offer"}, "not SDP text", id="not-sdp"),
    pytest.param({"sdp": VALID_SDP_HEAD, "type": "answer"}, "type 'offer'", id="wrong-type"),
    pytest.param({"type": "offer"}, "not SDP text", id="no-sdp"),
    pytest.param(
        {"sdp": VALID_SDP_HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "type": "offer"}, "no video", id="audio-only"
    ),
    pytest.param(
        {"sdp": VALID_SDP_HEAD + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n", "type": "offer"},
        "H.264",
        id="vp8-only",
    ),
    pytest.param(
        {"sdp": VALID_SDP_HEAD + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n", "type": "offer"},
        "could not be answered",
        id="malformed-sdp",
    ),
    pytest.param({"sdp": "v=0" + "x" * 70_000, "type": "offer"}, "at most", id="huge-sdp"),
]


async def post(url: str, **kwargs) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http, http.post(url, **kwargs) as res:
        return res.status, await res.json(content_type=None)


@pytest.mark.parametrize(("body", "message"), BAD_OFFERS)
async def test_bad_offer_is_refused_with_the_reason(server: ServerThread, body: dict, message: str) -> None:
    status, reply = await post(f"{server.url}/c/a/offer", json=body)
    assert status == 400, reply
    assert message in reply["error"], reply
    assert not server.studio.channels["a"].media.webrtc.viewers, "a refused offer must leave no peer behind"


BAD_CHATS = [
    pytest.param({"json": {"text": "x" * 301}}, "at most 300", id="too-long"),
    pytest.param({"json": {"text": "   "}}, "empty", id="empty"),
    pytest.param({"json": {"text": 42}}, "must be a string", id="not-a-string"),
    pytest.param({"json": {"text": "hi\x00\x01\x02\x03 there"}}, "binary or control", id="control-chars"),
    pytest.param(
        {"data": b"\xff\xfe\x00binary", "headers": {"Content-Type": "application/json"}}, "UTF-8 JSON", id="binary-body"
    ),
    pytest.param({"data": b"text=hello", "headers": {"Content-Type": "application/json"}}, "UTF-8 JSON", id="not-json"),
    pytest.param({"json": ["hello"]}, "JSON object", id="json-array"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_CHATS)
async def test_bad_chat_is_refused_with_the_reason(server: ServerThread, kwargs: dict, message: str) -> None:
    status, reply = await post(f"{server.url}/c/a/chat", **kwargs)
    assert status == 400, reply
    assert message in reply["error"], reply


async def test_unknown_channel_lists_the_channels(server: ServerThread) -> None:
    status, reply = await post(f"{server.url}/c/zzz/chat", json={"text": "hi"})
    assert status == 404 and reply["channels"] == ["a", "b"] and "zzz" in reply["error"]
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/c/zzz") as res:
        assert res.status == 404


async def test_abuse_of_one_channel_leaves_the_other_untouched(server: ServerThread) -> None:
    """A viewer of b keeps its full frame rate while a is flooded with bad requests."""
    viewer = AiortcViewer(server.url, "b")
    try:
        await viewer.connect()
        await viewer.until(lambda g: len(g.video_pts) >= 10, 10, "the first frames")
        late_before = server.studio.channels["b"].program.stats["late_frames"]
        start = time.monotonic()
        async with aiohttp.ClientSession() as http:
            for i in range(60):
                body = [{"sdp": "garbage", "type": "offer"}, {"text": "\x00" * 50}, {"text": "y" * 5000}][i % 3]
                path = "offer" if i % 3 == 0 else "chat"
                async with http.post(f"{server.url}/c/a/{path}", json=body) as res:
                    assert res.status == 400
        await viewer.until(lambda g: g.video_times[-1] - start > 3.0, 10, "3 s of video after the flood began")
    finally:
        await viewer.close()
    assert viewer.got.video_rate(since=start) >= 0.9 * 25
    assert server.studio.channels["b"].program.stats["late_frames"] == late_before


async def test_page_and_info_are_served(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/") as res:
            index = await res.text()
            assert res.status == 200 and 'href="/c/a"' in index and 'href="/c/b"' in index
        async with http.get(f"{server.url}/c/a") as res:
            page = await res.text()
            assert res.status == 200 and "chat-text" in page and 'id="mic"' in page and 'id="captions"' in page
        async with http.get(f"{server.url}/c/a/info") as res:
            info = await res.json()
            assert info["width"] == 256 and info["fps"] == 25 and len(info["mouth_box"]) == 4
