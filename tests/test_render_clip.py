"""`avatarcast render`: the clip is as long as the speech and the lips are in sync with it."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from agents.cli import main
from stream.avsync import measure

TEXT = "Hello everyone, welcome to the stream. Today we are testing a speaking avatar, and it talks quite a lot!"
MAX_OFFSET_MS = 40


def speech_span(clip: Path) -> tuple[float, float, float]:
    """(first voiced second, last voiced second, audio length) of the clip's audio track."""
    with av.open(str(clip)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=48_000)
        audio = np.concatenate(
            [r.to_ndarray().ravel() for f in container.decode(audio=0) for r in resampler.resample(f)]
        )
    hop = 480
    rms = np.sqrt((audio[: len(audio) // hop * hop].reshape(-1, hop) ** 2).mean(1))
    voiced = np.nonzero(rms > 0.02 * rms.max())[0]
    return voiced[0] * hop / 48_000, (voiced[-1] + 1) * hop / 48_000, len(audio) / 48_000


def render(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "clip.mp4"
    assert main(["render", "--say", TEXT, "-o", str(out), *extra]) == 0
    return out


def check_clip(clip: Path) -> None:
    with av.open(str(clip)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.width, video.height) == (512, 512)
    result = measure(clip)
    first, last, audio_s = speech_span(clip)
    # the clip is the speech: it starts with the first word and ends with the last one
    assert first < 0.25 and result.video_s - last < 0.5, (first, last, result)  # Piper ends on a short pause
    assert abs(result.video_s - audio_s) <= 0.045, (result, audio_s)
    assert result.video_s > 4.0, "the whole text was spoken"
    assert abs(result.offset_ms) <= MAX_OFFSET_MS, result
    assert result.correlation > 0.3, result


@pytest.mark.slow
def test_render_sprite_pack(tmp_path: Path) -> None:
    check_clip(render(tmp_path))


@pytest.mark.slow
def test_render_photo_pack(tmp_path: Path, astronaut_pack: Path) -> None:
    check_clip(render(tmp_path, "--avatar", str(astronaut_pack)))


def test_render_refuses_a_missing_avatar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--say", "hi", "-o", str(tmp_path / "x.mp4"), "--avatar", str(tmp_path / "nope")]) == 2
    assert "avatarcast avatar prepare" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
