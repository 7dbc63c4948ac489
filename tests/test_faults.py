"""Faults injected into a running studio of three channels, a real aiortc viewer on each.

One channel ("hit") takes the fault while a viewer asks it something; for every fault:
  * the other channels keep >= 98 % of their frames fresh (rendered in time, counted at their
    Program) and their viewers keep receiving them;
  * the hit channel never freezes: its frames keep going out at 25 fps;
  * what the viewer asked is not silently lost: the channel says its fallback line (the canned
    answer, the filler line, "say that again") and logs why;
  * once the fault is gone the channel speaks again within RECOVERY_S.
The faults of the model services run in this process (the LLM crashing and hanging, TTS and ASR
raising, lip-sync raising and running out of GPU memory, simulated: there is no GPU here). The
process-level ones have their own tests against real processes: a worker killed
(test_workers.py), the GPU service killed (test_gpu_service.py), the RTMP ingest gone
(test_rtmp.py), OBS restarted (test_obs.py), the IRC server dropping the connection
(test_chat_twitch.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from models.protocols import GenerationParams
from stream.frames import EventKind
from tests.conftest import ServerThread, assert_frames_in_time, espeak, eventually, studio_config
from tests.viewer_client import AiortcViewer, ScriptedMic

CALM = ("calm1", "calm2")
FPS = 25
RECOVERY_S = 10.0
"""A channel speaks a new line within this long after its fault is gone."""
FAULT_WINDOW_S = 4.0
"""Frames are counted over at least this long with the fault in place."""


@pytest.fixture(scope="module")
def studio() -> Any:
    conversation = {"chat": "ask", "first_token_timeout_s": 1.0}
    channels = [
        {"name": name, "video": {"width": 256, "height": 256}, "conversation": conversation,
         "persona": {"grounding": "free"}}
        for name in ("hit", *CALM)
    ]  # fmt: skip
    srv = ServerThread(studio_config(channels)).start()
    srv.captions = {name: [] for name in ("hit", *CALM)}  # type: ignore[attr-defined]
    for name, lines in srv.captions.items():  # type: ignore[attr-defined]
        srv.studio.channels[name].program.add_listener(
            lambda e, lines=lines: lines.append(e.text) if e.kind is EventKind.SEGMENT_STARTED else None
        )
    yield srv
    srv.stop()


# ---------------------------------------------------------------------- the faults
class CrashingLLM:
    """The LLM server accepted the request and then died."""

    async def generate(
        self, messages: list[dict[str, str]], params: GenerationParams, request_id: str, priority: int = 0
    ) -> AsyncIterator[str]:
        await asyncio.sleep(0)
        raise ConnectionResetError("the LLM server closed the connection")
        yield ""  # pragma: no cover


class HangingLLM:
    """The LLM server accepted the request and went silent."""

    async def generate(
        self, messages: list[dict[str, str]], params: GenerationParams, request_id: str, priority: int = 0
    ) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield ""  # pragma: no cover


class BrokenTTS:
    async def synthesize(self, text: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("voice model crashed")
        yield  # pragma: no cover


class BrokenASR:
    multilingual = False

    def transcribe(self, audio: Any, *, beam_size: int = 1, urgent: bool = True) -> concurrent.futures.Future[str]:
        failed: concurrent.futures.Future[str] = concurrent.futures.Future()
        failed.set_exception(RuntimeError("Whisper crashed"))
        return failed

    def close(self) -> None:
        pass


class FailingLipSync:
    """The hit channel's lip-sync calls fail (the other channels share the real one)."""

    def __init__(self, real: Any, error: Exception) -> None:
        self.real, self.error = real, error

    async def render(self, *args: Any, **kwargs: Any) -> None:
        raise self.error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@dataclass
class Fault:
    inject: Callable[[ServerThread], Callable[[], None]]
    """Put the fault in place -> a function that takes it away."""
    ask: str
    """"ask:" / "say:" a chat line, or "voice:" a question spoken into the viewer's microphone."""
    fallback: str | None
    """The line the viewer hears instead (None: the answer itself airs, only the picture is hit)."""
    logged: str


def _swap(obj: Any, attr: str, value: Any) -> Callable[[], None]:
    real = getattr(obj, attr)
    setattr(obj, attr, value)
    return lambda: setattr(obj, attr, real)


def _hit(srv: ServerThread) -> Any:
    return srv.studio.channels["hit"]


CANNED = "That's a great question! Give me a moment to think about it."
FAULTS = {
    "llm_crash": Fault(lambda s: _swap(s.studio, "llm", CrashingLLM()), "ask:What is the meaning of life?",
                       CANNED, "ConnectionResetError"),
    "llm_hang": Fault(lambda s: _swap(s.studio, "llm", HangingLLM()), "ask:Why is the sky blue?",
                      CANNED, "no first token in 1.0 s"),
    "tts_raise": Fault(lambda s: _swap(_hit(s).conversation.runner, "tts", BrokenTTS()),
                       "say:Welcome to the stream everyone!", "Hmm, one moment please.", "TTS failed"),
    "asr_raise": Fault(lambda s: _swap(_hit(s).conversation.listener, "asr", BrokenASR()),
                       "voice:How much do the running shoes cost?", "Sorry, could you say that again?",
                       "Whisper failed"),
    "lipsync_raise": Fault(lambda s: _swap(_hit(s).media.program.source, "lipsync",
                                           FailingLipSync(_hit(s).media.program.source.lipsync,
                                                          RuntimeError("renderer crashed"))),
                           "say:The picture may stumble but the voice goes on.", None, "renderer crashed"),
    "lipsync_oom": Fault(lambda s: _swap(_hit(s).media.program.source, "lipsync",
                                         FailingLipSync(_hit(s).media.program.source.lipsync,
                                                        torch.OutOfMemoryError("CUDA out of memory (simulated)"))),
                         "say:Out of memory, and still talking.", None, "out of memory"),
}  # fmt: skip


# ---------------------------------------------------------------------- the run
async def _trigger(srv: ServerThread, viewer: AiortcViewer, mic: ScriptedMic, ask: str) -> None:
    import aiohttp

    how, text = ask.split(":", 1)
    if how == "voice":
        mic.say(espeak(text))
        return
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{srv.url}/c/hit/chat", json={"text": text, "mode": how}) as res,
    ):
        assert res.status == 202, await res.text()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAULTS))
async def test_the_fault_stays_in_its_channel_and_the_viewer_is_told(
    studio: ServerThread, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    fault = FAULTS[name]
    captions = studio.captions  # type: ignore[attr-defined]
    mic = ScriptedMic()
    viewers = {"hit": AiortcViewer(studio.url, "hit", mic=mic), **{n: AiortcViewer(studio.url, n) for n in CALM}}
    restore = None
    try:
        with caplog.at_level(logging.INFO):
            restore = studio.call(_inject(fault, studio))  # first: a viewer's listening session takes its ASR
            for viewer in viewers.values():
                await viewer.connect()
            heard_before = len(captions["hit"])
            before, t0 = studio.frame_counters(), time.monotonic()
            received = {n: len(v.got.video_times) for n, v in viewers.items()}
            await _trigger(studio, viewers["hit"], mic, fault.ask)
            expected = fault.fallback or fault.ask.split(":", 1)[1]
            await eventually(lambda: expected in " ".join(captions["hit"][heard_before:]), 30, f"{expected!r} on air")
            await viewers["hit"].until(lambda g: max(g.audio_rms[-100:], default=0) > 1000, 10, "the line heard")
            await viewers["hit"].until(lambda g: g.video_times[-1] - t0 >= FAULT_WINDOW_S, 30, "the fault window")
            after, elapsed = studio.frame_counters(), time.monotonic() - t0
            got = {n: len(v.got.video_times) - received[n] for n, v in viewers.items()}
        assert fault.logged in caplog.text, f"the log does not say why ({fault.logged!r})"

        # the others: >= 98 % of their frames fresh, and their viewers kept getting them
        assert_frames_in_time(before, after, elapsed, CALM)
        for other in CALM:
            assert got[other] >= 0.9 * FPS * elapsed, (other, got[other], elapsed)
        # the hit channel never froze: its frames kept going out
        assert after["hit"][0] - before["hit"][0] >= 0.95 * FPS * elapsed
        assert got["hit"] >= 0.9 * FPS * elapsed, ("hit", got["hit"], elapsed)

        # the fault goes away: the channel speaks again, in time
        studio.call(_run(restore))
        restore = None
        line = f"Back to normal after {name.replace('_', ' ')}."
        since, t_back = len(captions["hit"]), time.monotonic()
        await _trigger(studio, viewers["hit"], mic, f"say:{line}")
        await eventually(lambda: line in " ".join(captions["hit"][since:]), RECOVERY_S, "the channel to speak again")
        print(f"{name}: others' fresh frames kept, recovered in {time.monotonic() - t_back:.1f} s")
    finally:
        if restore is not None:
            studio.call(_run(restore))
        for viewer in viewers.values():
            await viewer.close()


async def _inject(fault: Fault, srv: ServerThread) -> Callable[[], None]:
    return fault.inject(srv)  # on the studio's loop, like any change it makes itself


async def _run(fn: Callable[[], None]) -> None:
    fn()
