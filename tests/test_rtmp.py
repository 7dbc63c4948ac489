"""RTMP output against a real nginx-rtmp ingest on loopback: pushed, relayed, pulled back, decoded.

The ingest going away is one of the faults of tests/test_faults.py, with its criteria: every
channel keeps >= 98 % of its frames rendered in time, the hit channel's viewers keep their picture
and hear what it says meanwhile, and the stream is back within 10 s of the ingest's return.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from agents.config import ConfigError
from tests.conftest import ServerThread, assert_frames_in_time, eventually, free_port, studio_config
from tests.rtmp_server import NginxRtmp, RtmpPlayer
from tests.viewer_client import AiortcViewer

KEY = "live_8841_sEcReTkEy"
KEY_ENV = "AVATARCAST_TEST_STREAM_KEY"
OUTAGE_S = 4.0
"""The ingest stays away at least this long: frames are counted over it."""


async def _say(server: ServerThread, channel: str, text: str) -> None:
    async def go() -> None:
        server.studio.channels[channel].conversation.start_turn("say", text)

    server.call(go())


def _av_offset(played_video: list[tuple[float, float]], played_audio: list[tuple[float, float, float]]) -> float:
    """Seconds between the newest video pts and the newest audio pts that had arrived with it."""
    t, video_pts = played_video[-1]
    audio_pts = max(pts for arrived, pts, _ in played_audio if arrived <= t)
    return abs(video_pts - audio_pts)


async def test_the_channel_reaches_the_ingest_and_comes_back_after_it_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, KEY)
    ingest = NginxRtmp(tmp_path, free_port())
    ingest.start()
    play_url = f"{ingest.app_url}/{KEY}"
    first = RtmpPlayer(play_url).start()  # players wait for the publisher (nginx-rtmp idle streams)
    target = {"url": ingest.app_url, "key": f"env:{KEY_ENV}"}
    server = ServerThread(
        studio_config([
            {"name": "cast", "outputs": {"rtmp": [target], "reconnect_max_s": 2}},
            {"name": "calm", "video": {"width": 256, "height": 256}},
        ])
    )  # fmt: skip
    server.start()
    viewer, calm_viewer = AiortcViewer(server.url, "cast"), AiortcViewer(server.url, "calm")
    try:
        channel = server.studio.channels["cast"]
        output = channel.media.outputs.rtmp[0]
        await viewer.connect()
        await calm_viewer.connect()
        await eventually(lambda: len(first.got.video) >= 25, 30, "a second of video through the ingest")
        await _say(server, "cast", "Hello from the stream test. Can everybody hear me?")
        await eventually(lambda: any(rms > 1000 for *_, rms in first.got.audio), 20, "the speech through the ingest")
        assert first.got.shapes == {(512, 512, 3)}
        assert first.got.last_image is not None
        # the picture is the channel's avatar (the same colours as its own still frame)
        colour_gap = np.abs(first.got.last_image.mean((0, 1)) - channel.face.still.mean((0, 1))).max()
        assert colour_gap < 20, colour_gap
        assert output.state == "live"
        assert _av_offset(first.got.video, first.got.audio) < 0.2

        ingest.kill()
        outage_start, before = time.monotonic(), server.frame_counters()
        await eventually(lambda: output.state == "reconnecting", 15, "the output to notice the ingest died")
        first.stop()
        # the channel goes on talking to its WebRTC viewer while the ingest is away: what is said is heard
        await _say(server, "cast", "The ingest is away, and this page still hears me.")
        await viewer.until(
            lambda g: any(r > 1000 for r, t in zip(g.audio_rms, g.audio_times, strict=False) if t > outage_start),
            20,
            "speech",
        )
        await viewer.until(lambda g: g.video_times[-1] - outage_start >= OUTAGE_S, 30, "the outage window")
        after, elapsed = server.frame_counters(), time.monotonic() - outage_start
        assert_frames_in_time(before, after, elapsed, ("cast", "calm"))
        assert calm_viewer.got.video_rate(outage_start) >= 0.9 * 25
        ingest.start()
        restarted = time.monotonic()
        second = RtmpPlayer(play_url).start()
        try:
            await eventually(lambda: len(second.got.video) >= 50, 20, "video again after the restart")
            await _say(server, "cast", "And we are back on the air.")
            await eventually(lambda: any(rms > 1000 for *_, rms in second.got.audio), 20, "speech after the restart")
        finally:
            second.stop()
        assert second.got.video[0][0] - restarted < 10, "the stream should resume within 10 s of the ingest's return"
        # every session but the live one ended in a failure (a retry in the outage counts as one)
        assert output.state == "live" and output.stats["connects"] == output.stats["failures"] + 1 >= 2
        # the new connection starts at zero with its sound on its picture
        assert second.got.video[0][1] < 0.5, second.got.video[0]
        assert _av_offset(second.got.video, second.got.audio) < 0.2

        # the WebRTC viewer noticed nothing: frames kept coming through the outage at the frame rate
        during = [t for t in viewer.got.video_times if t >= outage_start]
        gaps = np.diff(during)
        assert gaps.max() < 0.3, f"the viewer's picture stalled for {gaps.max():.2f} s"
        assert viewer.got.video_rate(outage_start) >= 0.9 * 25

        # the key is nowhere: not in the logs, the reported state or the health page
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as response:
            health = await response.text()
        assert "rtmp" in health and "/***" in health
        for text in (caplog.text, health, json.dumps(output.info())):
            assert KEY not in text
    finally:
        await viewer.close()
        await calm_viewer.close()
        server.stop()
        ingest.kill()
        first.stop()


async def test_an_unreachable_ingest_is_retried_without_touching_the_channel(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setenv(KEY_ENV, KEY)
    nobody = f"rtmp://127.0.0.1:{free_port()}/live"
    target = {"url": nobody, "key": f"env:{KEY_ENV}"}
    server = ServerThread(studio_config([{"name": "cast", "outputs": {"rtmp": [target], "reconnect_max_s": 1}}]))
    server.start()
    viewer = AiortcViewer(server.url, "cast")
    try:
        output = server.studio.channels["cast"].media.outputs.rtmp[0]
        await viewer.connect()
        await eventually(lambda: output.stats["failures"] >= 2, 20, "two failed tries")
        start = time.monotonic()
        await viewer.until(lambda g: len([t for t in g.video_times if t >= start]) >= 50, 10, "two more seconds")
        assert viewer.got.video_rate(start) >= 0.9 * 25
        assert output.state == "reconnecting"
        assert output.last_error and KEY not in output.last_error
        assert "Connection refused" in output.last_error or "Errno" in output.last_error, output.last_error
        assert KEY not in caplog.text and f"{nobody}/***" in caplog.text
    finally:
        await viewer.close()
        server.stop()


@pytest.mark.parametrize(
    ("outputs", "says"),
    [
        ({"rtmp": [{"url": "http://example.com/live"}]}, "not an RTMP URL"),
        ({"rtmp": [{"url": "rtmp://host/app", "key": "live_123"}]}, "secrets are not written in the config"),
        ({"rtmp": [{"url": "rtmp://host/app", "key": "env:AVATARCAST_UNSET_KEY"}]}, "AVATARCAST_UNSET_KEY is not set"),
        ({"recrod": "x.mp4"}, "unknown key"),
    ],
)
def test_bad_output_config_names_the_key_and_the_fix(outputs: dict, says: str) -> None:
    with pytest.raises(ConfigError) as bad:
        studio_config([{"name": "cast", "outputs": outputs}])
    assert says in str(bad.value)
    assert "channels[0].outputs" in str(bad.value)
    assert "live_123" not in str(bad.value)
