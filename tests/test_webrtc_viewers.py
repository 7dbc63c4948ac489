"""Real aiortc viewers against a real channel: frames, audio, speech, one shared encoder."""

from __future__ import annotations

import asyncio
import gc
import time

import aiohttp
import av
import numpy as np
import pytest

from tests.conftest import ServerThread, eventually, studio_config
from tests.viewer_client import AiortcViewer

FPS = 25


@pytest.fixture(scope="module")
def server():
    srv = ServerThread(studio_config([{"name": "nova"}])).start()
    yield srv
    srv.stop()


def live_h264_encoders() -> int:
    """libx264 encoder contexts alive in this process (PyAV's contexts are tracked by gc)."""
    gc.collect()
    return sum(
        1
        for o in gc.get_objects()
        if isinstance(o, av.codec.context.CodecContext) and o.is_encoder and o.name == "libx264"
    )


async def test_viewer_gets_video_and_audio_paced_by_pts(server: ServerThread) -> None:
    viewer = AiortcViewer(server.url, "nova")
    try:
        await viewer.connect()
        start = time.monotonic()
        await viewer.until(lambda g: len(g.video_pts) >= 101, 15, "100 frames")
        elapsed = time.monotonic() - start
    finally:
        await viewer.close()
    got = viewer.got
    # >= 90 % of the frames 25 fps promises over the time they took to arrive
    assert len(got.video_pts) - 1 >= 0.9 * FPS * elapsed, (len(got.video_pts), elapsed)
    # none missing in between: the RTP timestamps (90 kHz) span as many frames as arrived
    span_frames = (got.video_pts[-1] - got.video_pts[0]) / (90_000 / FPS)
    assert len(got.video_pts) - 1 >= 0.9 * span_frames
    assert all(b > a for a, b in zip(got.video_pts, got.video_pts[1:], strict=False)), "video pts must increase"
    assert all(b > a for a, b in zip(got.audio_pts, got.audio_pts[1:], strict=False)), "audio pts must increase"
    audio_in_window = sum(1 for t in got.audio_times if start <= t <= start + elapsed)
    assert audio_in_window >= 0.9 * 50 * elapsed, (audio_in_window, elapsed)  # 20 ms Opus frames


async def test_typed_text_is_spoken_with_moving_lips(server: ServerThread) -> None:
    mouth = server.studio.channels["nova"].face.mouth_box
    viewer = AiortcViewer(server.url, "nova", crop=mouth)
    try:
        await viewer.connect()
        await viewer.until(lambda g: len(g.audio_rms) >= 25, 10, "half a second of audio")
        quiet = float(np.percentile(viewer.got.audio_rms, 95))
        async with aiohttp.ClientSession() as http:
            res = await http.post(f"{server.url}/c/nova/chat", json={"text": "Hello there! How are you doing today?"})
            assert res.status == 202, await res.text()
        n_before = len(viewer.got.frames)
        await viewer.until(lambda g: max(g.audio_rms[25:], default=0) > 1000, 15, "speech at the viewer")
        t_loud = next(i for i, r in enumerate(viewer.got.audio_rms) if i >= 25 and r > 1000)
        await viewer.until(lambda g: len(g.audio_rms) > t_loud + 75, 10, "1.5 s of speech")
    finally:
        await viewer.close()
    assert quiet < 100, f"the channel should be silent before the chat message (rms {quiet})"
    loud = np.array(viewer.got.audio_rms[t_loud : t_loud + 75])
    assert np.median(loud) > 500, "speech audio should be loud at the viewer"
    idle = np.stack(viewer.got.frames[:n_before])
    speaking = np.stack(viewer.got.frames[-40:])
    idle_motion = np.abs(np.diff(idle, axis=0)).mean()
    speech_motion = np.abs(np.diff(speaking, axis=0)).mean()
    assert speech_motion > 3 * idle_motion + 0.5, (idle_motion, speech_motion)


async def test_three_viewers_share_one_encoder(server: ServerThread) -> None:
    channel = server.studio.channels["nova"]
    encoders_before = live_h264_encoders()  # the channel's own (and any other test's left for gc)
    viewers = [AiortcViewer(server.url, "nova") for _ in range(3)]
    try:
        for v in viewers:
            await v.connect()
        for v in viewers:
            await v.until(lambda g: len(g.video_pts) >= 25, 10, "a second of video")
        assert channel.media.webrtc.subscribers("video") == 3
        assert channel.media.webrtc.subscribers("audio") == 3
        assert live_h264_encoders() == encoders_before, "no H.264 encoder was opened for any viewer"
        senders = [
            t.sender
            for vw in channel.media.webrtc.viewers.values()
            for t in vw.pc.getTransceivers()
            if t.kind == "video"
        ]
        assert len(senders) == 3
        for sender in senders:  # aiortc only packetises the shared packets: no codec of its own
            assert getattr(sender._RTCRtpSender__encoder, "codec", None) is None
    finally:
        for v in viewers:
            await v.close()
    await eventually(lambda: not channel.media.webrtc.viewers, 15, "the server to drop the closed viewers")
    assert channel.media.webrtc.subscribers("video") == 0 and channel.media.webrtc.subscribers("audio") == 0


async def test_a_viewers_picture_loss_request_reaches_the_shared_encoder(server: ServerThread) -> None:
    channel = server.studio.channels["nova"]
    viewer = AiortcViewer(server.url, "nova")
    try:
        await viewer.connect()
        await viewer.until(lambda g: len(g.video_pts) >= 10, 10, "the first frames")
        receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")
        ssrc = receiver.getSynchronizationSources()[0].source  # the SSRC the channel sends video from
        plis_before = channel.encoder.keyframe_requests["pli"]
        idr_before = channel.encoder.stats["idr"]
        await receiver._send_rtcp_pli(ssrc)  # what a decoder does when it lost the picture
        await viewer.until(lambda g: channel.encoder.stats["idr"] > idr_before, 5, "a fresh IDR")
        assert channel.media.webrtc.viewers[viewer.viewer_id].plis == 1
    finally:
        await viewer.close()
    assert channel.encoder.keyframe_requests["pli"] == plis_before + 1


async def _task_names() -> set[str]:
    """The coroutines of the tasks on the loop this runs on."""
    return {task.get_coro().__qualname__ for task in asyncio.all_tasks()}


async def test_a_viewers_peer_sends_from_the_send_loop_not_the_channels(server: ServerThread) -> None:
    channel = server.studio.channels["nova"]
    viewer = AiortcViewer(server.url, "nova")
    try:
        await viewer.connect()
        await viewer.until(lambda g: len(g.video_pts) >= 10, 10, "frames at the viewer")
        webrtc = channel.media.webrtc
        on_send = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_task_names(), webrtc.send.loop))
        on_channel = server.call(_task_names())
        assert "RTCRtpSender._run_rtp" in on_send
        assert "RTCRtpSender._run_rtp" not in on_channel, "a peer sends from the channel's loop"
        assert "Supervised.run" in on_channel and "Supervised.run" not in on_send
        assert webrtc.subscribers("video") == 1 and webrtc.subscribers("audio") == 1
    finally:
        await viewer.close()
