"""The Coqui TTS backend (GPU hosts). Its lip timing from text runs everywhere; loading and speaking
a real Coqui model runs where `coqui-tts` imports (not on the project's CPU machine, whose
torchaudio is a CUDA build): there the test skips and says why."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
import pytest

from agents.config import parse_config
from agents.worker.studio import Studio
from models.lipsync.visemes import Viseme, classify
from models.protocols import TTSError
from models.tts_coqui import CoquiTTS, coqui_missing, spread_phonemes
from models.tts_service import TTSService

RATE = 22050


def hello_phonemes() -> list[str]:
    from piper.phonemize_espeak import EspeakPhonemizer

    return [p for group in EspeakPhonemizer().phonemize("en-us", "Hello there, friend.") for p in group]


def test_phonemes_are_spread_over_the_voiced_audio_in_order() -> None:
    phonemes = hello_phonemes()
    audio = np.zeros(int(1.6 * RATE), np.int16)  # 0.3 s silence, 1 s of voice, 0.3 s silence
    t = np.arange(RATE) / RATE
    audio[int(0.3 * RATE) : int(1.3 * RATE)] = (8000 * np.sin(2 * np.pi * 180 * t)).astype(np.int16)
    timed = spread_phonemes(phonemes, audio, RATE)
    assert timed, "a spoken sentence gets timed phonemes"
    assert abs(timed[0].start - 0.3) < 0.01 and abs(timed[-1].end - 1.3) < 0.01, "only the voiced stretch"
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(timed)), "in order, no overlap"
    assert {p.phoneme for p in timed}.isdisjoint({" ", ",", ".", "ˈ"}), "gaps, pauses and marks take no slot"
    gaps = [b.start - a.end for a, b in itertools.pairwise(timed)]
    assert max(gaps) > 0.05, "the comma leaves a pause"
    classes = classify([p.phoneme for p in timed])
    vowel = next(p for p, c in zip(timed, classes, strict=True) if c in (Viseme.EH, Viseme.AA, Viseme.OH))
    consonant = next(p for p, c in zip(timed, classes, strict=True) if c == Viseme.CONS)
    assert vowel.duration > consonant.duration


def test_silence_gets_no_phonemes() -> None:
    assert spread_phonemes(hello_phonemes(), np.zeros(RATE, np.int16), RATE) == []


def coqui_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "coqui-voice"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.pth").write_bytes(b"")
    return folder


@pytest.mark.skipif(coqui_missing() is None, reason="coqui-tts imports here: the GPU-host test below runs instead")
async def test_where_coqui_cannot_import_its_channel_stays_off_air_with_the_reason(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "llm": {"backend": "none"},
            "channels": [
                {"name": "coqui", "voice": {"backend": "coqui", "model": str(coqui_folder(tmp_path))}},
                {"name": "piper"},
            ],
        },
        "coqui.yaml",
    )
    with pytest.raises(TTSError, match=r"coqui-tts does not import here.*fix: pip install coqui-tts"):
        await TTSService().voice(Path(cfg.channels[0].voice.model), backend="coqui")
    studio = Studio(cfg)
    try:
        await studio.start()
        assert list(studio.channels) == ["piper"], "the other channel goes on air"
        assert "coqui-tts does not import here" in studio.failed["coqui"]
    finally:
        await studio.aclose()


def test_a_coqui_voice_needs_its_model_folder(tmp_path: Path) -> None:
    from agents.config import ConfigError

    with pytest.raises(ConfigError, match="backend coqui has no embedded voice"):
        parse_config({"channels": [{"name": "a", "voice": {"backend": "coqui"}}]}, "c.yaml")
    with pytest.raises(ConfigError, match="not a Coqui model folder"):
        parse_config({"channels": [{"name": "a", "voice": {"backend": "coqui", "model": str(tmp_path)}}]}, "c.yaml")
    parse_config(
        {"channels": [{"name": "a", "voice": {"backend": "coqui", "model": str(coqui_folder(tmp_path))}}]}, "c.yaml"
    )


def tiny_vits(folder: Path) -> Path:
    """A random-weight VITS saved the way Coqui saves its models (config.json + model.pth)."""
    import torch
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    args = VitsArgs(hidden_channels=32, hidden_channels_ffn_text_encoder=64, num_layers_text_encoder=2)
    config = VitsConfig(model_args=args, use_phonemes=False, text_cleaner="english_cleaners")
    model = Vits.init_from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder


@pytest.mark.skipif(coqui_missing() is not None, reason=str(coqui_missing()))
async def test_a_coqui_model_from_its_folder_speaks_sentence_by_sentence_with_timed_phonemes(tmp_path: Path) -> None:
    voice = await asyncio.to_thread(CoquiTTS.load, tiny_vits(tmp_path / "vits"))
    chunks = [c async for c in voice.synthesize("Hello there. How are you today?")]
    assert len(chunks) == 2, "one chunk per sentence"
    for chunk in chunks:
        assert chunk.sample_rate == voice.sample_rate and chunk.audio.dtype == np.int16 and len(chunk.audio)
        assert chunk.phonemes and chunk.phonemes[-1].end <= chunk.duration + 1e-6
