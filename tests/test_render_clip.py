"""`avatarcast render`: the clip is as long as the speech and the lips are in sync with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from agents.cli import main
from agents.speech import split_sentences, to_program_rate
from models.tts_piper import PiperTTS
from stream.avsync import measure

TEXT = "Hello everyone, welcome to the stream. Today we are testing a speaking avatar, and it talks quite a lot!"
MAX_OFFSET_MS = 40


@pytest.fixture(scope="module")
def speech_seconds() -> float:
    """How long the speech itself is: the TTS output, sentence by sentence, at 48 kHz."""

    async def total() -> float:
        tts = PiperTTS.load()
        samples = 0
        for sentence in split_sentences(TEXT):
            async for chunk in tts.synthesize(sentence):
                samples += len(to_program_rate(chunk.audio, chunk.sample_rate))
        return samples / 48_000

    return asyncio.run(total())


def render(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "clip.mp4"
    assert main(["render", "--say", TEXT, "-o", str(out), *extra]) == 0
    return out


def check_clip(clip: Path, speech_seconds: float) -> None:
    with av.open(str(clip)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.width, video.height) == (512, 512)
    result = measure(clip)
    # whole frames: the clip ends at the first frame boundary after the speech
    assert speech_seconds - 0.001 <= result.video_s <= speech_seconds + 0.04 + 0.001, (result, speech_seconds)
    assert abs(result.audio_s - speech_seconds) < 0.05, (result, speech_seconds)
    assert abs(result.offset_ms) <= MAX_OFFSET_MS, result
    assert result.correlation > 0.3, result


@pytest.mark.slow
def test_render_sprite_pack(tmp_path: Path, speech_seconds: float) -> None:
    check_clip(render(tmp_path), speech_seconds)


@pytest.mark.slow
def test_render_photo_pack(tmp_path: Path, speech_seconds: float, astronaut_pack: Path) -> None:
    check_clip(render(tmp_path, "--avatar", str(astronaut_pack)), speech_seconds)


def test_render_refuses_a_missing_avatar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--say", "hi", "-o", str(tmp_path / "x.mp4"), "--avatar", str(tmp_path / "nope")]) == 2
    assert "avatarcast avatar prepare" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
