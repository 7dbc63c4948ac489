"""Word-timed captions: the overlay page's event stream, cuts on barge-in, burned-in captions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
import yaml

from agents.cli import main
from models.lipsync.visemes import PhonemeTiming
from models.word_timing import word_starts
from overlays.captions import CaptionBurner, CaptionLine
from stream.clock import VideoFormat
from stream.frames import EventKind, ProgramEvent
from tests.conftest import ServerThread, eventually, studio_config

SENTENCE = "Our trail shoes have a deep grip for muddy hills."
LONG = (
    "This is a long answer about our running shoes, and it keeps going for quite a while. "
    "They are light and fast, they come in three colours, and they are made for long runs."
)


@pytest.fixture(scope="module")
def server():
    srv = ServerThread(studio_config([{"name": "cap", "video": {"width": 256, "height": 256}}])).start()
    yield srv
    srv.stop()


async def caption_events(url: str) -> AsyncIterator[dict[str, Any]]:
    """The overlay's event stream, read the way a browser's EventSource reads it."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Accept": "text/event-stream"}, timeout=aiohttp.ClientTimeout(total=60)) as res,
    ):
        assert res.status == 200 and res.headers["Content-Type"].startswith("text/event-stream")
        async for raw in res.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                yield json.loads(line[6:])


async def collect(url: str, until: str, limit_s: float = 30) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in caption_events(url):
            got.append(event)
            if event["type"] == until:
                return

    await asyncio.wait_for(read(), limit_s)
    return got


def _words(text: str) -> list[str]:
    return text.split()


async def test_the_overlay_streams_each_word_in_order_inside_its_speech(server: ServerThread) -> None:
    url = f"{server.url}/c/cap/overlay/captions"
    reader = asyncio.create_task(collect(url, until="idle"))
    async with aiohttp.ClientSession() as http:
        await eventually(lambda: server.studio.channels["cap"].events.listeners > 0, 10, "the overlay to listen")
        async with http.post(f"{server.url}/c/cap/chat", json={"text": SENTENCE, "mode": "say"}) as res:
            assert res.status == 202
    events = await reader
    assert {e["type"] for e in events} <= {"word", "caption", "caption_cut", "idle"}, "only caption events"
    captions = [e for e in events if e["type"] == "caption"]
    words = [e for e in events if e["type"] == "word"]
    assert [w["word"] for w in words] == _words(SENTENCE)
    times = [w["at"] for w in words]
    assert times == sorted(times) and len(set(times)) == len(times), times
    for word in words:  # every word is stamped inside the audio of the sentence it belongs to
        assert any(c["at"] <= word["at"] < c["at"] + c["duration"] for c in captions), (word, captions)
    # the words spread over the speech, not bunched at its start
    first, last = captions[0]["at"], captions[-1]["at"] + captions[-1]["duration"]
    assert times[-1] - times[0] > 0.5 * (last - first)


async def test_a_cut_answer_captions_only_the_words_that_aired(server: ServerThread) -> None:
    url = f"{server.url}/c/cap/overlay/captions"
    got: list[dict[str, Any]] = []
    channel = server.studio.channels["cap"]

    async def read() -> None:
        async for event in caption_events(url):
            got.append(event)
            if event["type"] == "idle":
                return

    reader = asyncio.create_task(read())
    async with aiohttp.ClientSession() as http:
        await eventually(lambda: channel.events.listeners > 0, 10, "the overlay to listen")
        async with http.post(f"{server.url}/c/cap/chat", json={"text": LONG, "mode": "say"}) as res:
            assert res.status == 202
        await eventually(lambda: sum(e["type"] == "word" for e in got) >= 3, 20, "three words heard")
        async with http.post(f"{server.url}/c/cap/interrupt", json={}) as res:
            assert res.status == 200
    await asyncio.wait_for(reader, 30)
    words = [e["word"] for e in got if e["type"] == "word"]
    assert 3 <= len(words) < len(_words(LONG)) // 2, words
    assert words == _words(LONG)[: len(words)], "the words that aired, in order, and none of the rest"
    assert any(e["type"] == "caption_cut" for e in got)


async def test_the_overlay_page_and_unknown_overlays(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        for name in ("captions", "ticker"):
            async with http.get(f"{server.url}/c/cap/overlay/{name}") as res:
                assert res.status == 200 and res.content_type == "text/html"
                assert "EventSource" in await res.text()
        async with http.get(f"{server.url}/c/cap/overlay/scoreboard") as res:
            assert res.status == 404
            assert "captions" in (await res.json())["error"]
        async with http.get(f"{server.url}/c/nope/overlay/captions") as res:
            assert res.status == 404


# ---------------------------------------------------------------------- burn-in
class FrameCatcher:
    def __init__(self) -> None:
        self.frames: dict[int, np.ndarray] = {}

    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        pass

    def on_video(self, image: np.ndarray, frame: int) -> None:
        self.frames[frame] = image

    async def ready(self) -> None:
        pass


def _event(kind: EventKind, at: float, text: str = "", interrupted: bool = False) -> ProgramEvent:
    return ProgramEvent(kind, "t1", 1, text, at, interrupted=interrupted)


def test_burned_in_captions_show_heard_words_and_clear_after_the_voice() -> None:
    fmt = VideoFormat(256, 256, 25)
    sink = FrameCatcher()
    burner = CaptionBurner(sink, fmt)
    image = np.full((256, 256, 3), 90, np.uint8)
    burner.on_event(_event(EventKind.SEGMENT_STARTED, 0.0, "Hello there"))
    burner.on_event(_event(EventKind.WORD, 0.10, "Hello"))
    burner.on_event(_event(EventKind.WORD, 0.50, "there"))
    burner.on_event(_event(EventKind.SEGMENT_FINISHED, 1.0))
    for frame in (0, 5, 15, 30, 70):  # 0 s, 0.2 s, 0.6 s, 1.2 s, 2.8 s
        burner.on_video(image, frame)
    band = {n: f[200:, :, :] for n, f in sink.frames.items()}
    assert np.array_equal(sink.frames[0], image), "no caption before the first word is heard"
    white = {n: int((b > 200).all(axis=2).sum()) for n, b in band.items()}
    assert white[5] > 30 and white[15] > white[5], white  # one word, then two
    assert white[30] == white[15], "the line holds a moment after the voice stops"
    assert np.array_equal(sink.frames[70], image), "then it clears"
    assert np.array_equal(image, np.full((256, 256, 3), 90, np.uint8)), "the source frame is not drawn on"


def test_a_cut_clears_the_burned_in_line_at_once() -> None:
    line = CaptionLine()
    line.on_event(_event(EventKind.WORD, 0.1, "Hello"))
    assert line.text(0.2) == "Hello"
    line.on_event(_event(EventKind.SEGMENT_FINISHED, 0.3, interrupted=True))
    assert line.text(0.32) == ""


def _caption_bands(clip: Path) -> np.ndarray:
    """The caption band (bottom quarter) of every frame of `clip`, as int16 RGB."""
    with av.open(str(clip)) as container:
        return np.stack([f.to_ndarray(format="rgb24")[-64:].astype(np.int16) for f in container.decode(video=0)])


def test_render_with_burn_in_draws_the_words_into_the_encoded_picture(tmp_path: Path) -> None:
    """The whole pipeline (TTS word times -> Program -> burner -> encoder -> MP4), with and without."""
    plain = {"name": "burn", "video": {"width": 256, "height": 256}}
    burned = {**plain, "outputs": {"burn_in_captions": True}}
    bands = {}
    for label, channel in (("plain", plain), ("burned", burned)):
        config = tmp_path / f"{label}.yaml"
        config.write_text(yaml.safe_dump({"llm": {"backend": "none"}, "channels": [channel]}))
        clip = tmp_path / f"{label}.mp4"
        assert main(["render", "-c", str(config), "--say", "Captions on the picture.", "-o", str(clip)]) == 0
        bands[label] = _caption_bands(clip)
    n = min(len(bands["plain"]), len(bands["burned"]))
    diff = np.abs(bands["burned"][:n] - bands["plain"][:n]).mean(axis=(1, 2, 3))
    assert diff[0] < 3, "no caption before the first word"
    assert diff[n // 2] > 20, diff  # mid-speech: a dark band with white words
    white = (bands["burned"][n // 2] > 215).all(axis=2).sum()
    assert white > 50, "the words are drawn in white"


# ---------------------------------------------------------------------- word timing
def _phonemes(spec: str, step: float = 0.05) -> list[PhonemeTiming]:
    return [PhonemeTiming(p, i * step, step) for i, p in enumerate(spec)]


def test_word_starts_follow_the_spoken_words() -> None:
    phonemes = _phonemes("^hi wɜld$")  # two spoken words: starts at phoneme 1 and 4
    assert word_starts(["Hi", "world"], phonemes) == pytest.approx([0.05, 0.20])


def test_word_starts_stay_in_order_when_espeak_joins_or_splits_words() -> None:
    phonemes = _phonemes("^wʌnhʌndɹɪd ænd fɪfti dɑlɚz$")  # "150 dollars" read as four words
    starts = word_starts(["150", "dollars"], phonemes)
    assert starts == sorted(starts) and 0 <= starts[0] < starts[1] < len(phonemes) * 0.05
