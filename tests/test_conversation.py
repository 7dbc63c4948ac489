"""Turns on a live channel: stopping an answer mid-sentence, and faults that must not freeze it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest

from models.protocols import GenerationParams
from tests.conftest import ServerThread, eventually, studio_config
from tests.viewer_client import AiortcViewer

LONG = (
    "This is a long answer about our running shoes. They are light and fast. "
    "They come in three colours. They are made for long runs on the road. "
    "You can wear them every day, rain or shine, and they will keep you going."
)


@pytest.fixture(scope="module")
def server():
    srv = ServerThread(
        studio_config(
            [
                {
                    "name": "nova",
                    "video": {"width": 256, "height": 256},
                    "conversation": {"chat": "ask", "first_token_timeout_s": 1.0},
                    "persona": {"grounding": "free"},  # the LLM's own answer: its faults are tested here
                }
            ]
        )
    ).start()
    yield srv
    srv.stop()


async def post(url: str, body: dict | None = None) -> dict:
    async with aiohttp.ClientSession() as http, http.post(url, json=body or {}) as res:
        assert res.status < 300, await res.text()
        return await res.json()


def loud(got, since: int) -> bool:  # type: ignore[no-untyped-def]
    return max(got.audio_rms[since:], default=0) > 1000


async def test_stop_cuts_the_answer_at_once_and_memory_keeps_what_was_heard(server: ServerThread) -> None:
    channel = server.studio.channels["nova"]
    viewer = AiortcViewer(server.url, "nova", crop=(0, 0, 256, 256))
    try:
        await viewer.connect()
        start = len(viewer.got.audio_rms)
        reply = await post(f"{server.url}/c/nova/chat", {"text": LONG, "mode": "say"})
        await viewer.until(lambda g: loud(g, start), 15, "the answer at the viewer")
        t_loud = len(viewer.got.audio_rms)
        await viewer.until(lambda g: len(g.audio_rms) > t_loud + 75, 5, "1.5 s of the answer")
        stopped = await post(f"{server.url}/c/nova/interrupt")
        t_stop = len(viewer.got.audio_rms)
        await viewer.until(lambda g: len(g.audio_rms) > t_stop + 50, 5, "a second after the stop")
    finally:
        await viewer.close()
    assert stopped["stopped"] == [reply["turn"]]
    after = np.array(viewer.got.audio_rms[t_stop + 10 : t_stop + 50])  # 200 ms of network/jitter slack
    assert after.max() < 100, "the viewer hears nothing after the stop"
    await eventually(lambda: not channel.conversation.turns, 5, "the turn to close")
    said = channel.conversation.memory.messages()[-1]
    assert said["role"] == "assistant"
    heard = said["content"]
    assert heard.startswith("This is a long answer") and len(heard) < len(LONG) / 2, heard
    assert channel.program.stats["cuts"] >= 1


class HangingLLM:
    """An LLM whose server accepted the request and then went silent (fault injection)."""

    def __init__(self) -> None:
        self.cancelled = 0

    async def generate(
        self, messages: list[dict[str, str]], params: GenerationParams, request_id: str, priority: int = 0
    ) -> AsyncIterator[str]:
        try:
            await asyncio.Event().wait()
            yield ""
        finally:
            self.cancelled += 1


class BrokenTTS:
    """A TTS that fails on every call (the pre-rendered lines were made before it broke)."""

    async def synthesize(self, text: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("voice model crashed")
        yield  # pragma: no cover


async def run_fault(
    server: ServerThread, text: str, mode: str, expected_line: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel = server.studio.channels["nova"]
    viewer = AiortcViewer(server.url, "nova")
    captions: list[str] = []
    channel.program.add_listener(lambda e: captions.append(e.text))
    try:
        await viewer.connect()
        start_frames, start = len(viewer.got.video_pts), time.monotonic()
        with caplog.at_level(logging.WARNING):
            await post(f"{server.url}/c/nova/chat", {"text": text, "mode": mode})
            await viewer.until(lambda g: loud(g, 0), 15, "the fallback line at the viewer")
            await viewer.until(lambda g: g.video_times[-1] - start > 3.0, 10, "3 s of video through the fault")
    finally:
        await viewer.close()
    frames = len(viewer.got.video_pts) - start_frames
    elapsed = viewer.got.video_times[-1] - start
    assert frames >= 0.95 * 25 * elapsed, (frames, elapsed)
    assert expected_line in captions, captions


async def test_a_hanging_llm_gives_the_canned_answer(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    llm = HangingLLM()
    server.studio.llm = llm
    try:
        await run_fault(server, "What is the meaning of life?", "ask", "That's a great question!", caplog)
    finally:
        server.studio.llm = None
    assert "no first token in 1.0 s" in caplog.text
    assert llm.cancelled == 1, "the hanging request was aborted"


async def test_a_failing_tts_plays_the_filler_line(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    channel = server.studio.channels["nova"]
    real = channel.conversation.runner.tts
    channel.conversation.runner.tts = BrokenTTS()
    try:
        await run_fault(server, "Welcome to the stream everyone!", "say", "Hmm, one moment please.", caplog)
    finally:
        channel.conversation.runner.tts = real
    assert "TTS failed (RuntimeError: voice model crashed)" in caplog.text
