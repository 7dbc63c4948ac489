"""Wav2Lip's mel features in torch against a NumPy reference written here from the formulas.

The reference frames the padded signal by hand and uses np.fft.rfft (no torch.stft), builds its
own Slaney filterbank loop by loop, and follows upstream audio.py step by step in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.lipsync.mel import (
    mel_filterbank,
    mel_spectrogram,
    mel_windows,
    resample_to_16k,
    window_starts,
)

# librosa.filters.mel(sr=22050, n_fft=2048) (128 Slaney mels, area-normalised): the first weights of
# rows 0 and 1, as the mel_filter crate's documentation tests quote them.
LIBROSA_22050_2048_ROW0 = (0, 0.016182853208219942, 0.032365706416439884, 0.028990088037379964, 0.012807234829160026, 0)
LIBROSA_22050_2048_ROW1 = (0, 0, 0, 0.009779235793639925, 0.025962089001859864, 0.035393705451959974,
                           0.01921085224374004, 0.003027999035520103, 0)  # fmt: skip


def _slaney_mel(hz: float) -> float:
    if hz < 1000.0:
        return 3.0 * hz / 200.0
    return 15.0 + 27.0 * math.log(hz / 1000.0) / math.log(6.4)


def _slaney_hz(mel: float) -> float:
    if mel < 15.0:
        return 200.0 * mel / 3.0
    return 1000.0 * 6.4 ** ((mel - 15.0) / 27.0)


def _reference_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    lo, hi = _slaney_mel(fmin), _slaney_mel(fmax)
    centres = [_slaney_hz(lo + (hi - lo) * k / (n_mels + 1)) for k in range(n_mels + 2)]
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    bank = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        left, centre, right = centres[m : m + 3]
        for j, f in enumerate(freqs):
            if left < f < right:
                up = (f - left) / (centre - left)
                down = (right - f) / (right - centre)
                bank[m, j] = min(up, down) * 2.0 / (right - left)
    return bank


def _reference_mel(wav: np.ndarray, pad_mode: str) -> np.ndarray:
    """audio.melspectrogram upstream, in float64 NumPy."""
    x = np.asarray(wav, dtype=np.float64)
    x = np.concatenate(([x[0]], x[1:] - 0.97 * x[:-1]))
    padded = np.pad(x, 400, mode=pad_mode)
    count = 1 + (len(padded) - 800) // 200
    frames = np.stack([padded[t * 200 : t * 200 + 800] for t in range(count)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic
    magnitude = np.abs(np.fft.rfft(frames * hann, axis=1)).T  # (401, T)
    mel = _reference_filterbank(16000, 800, 80, 55.0, 7600.0) @ magnitude
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def _chirp_and_noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    sweep = 0.5 * np.sin(2 * np.pi * (80 * t + 900 * t**2))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t)  # loud and near-silent stretches
    return (sweep * envelope + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def test_filterbank_matches_librosa_facts() -> None:
    """The Slaney scale (librosa docs: hz_to_mel(60) = 0.9, 440 Hz = 6.6 mel, mel 3 = 200 Hz) and
    librosa's mel(sr=22050, n_fft=2048) first rows as published by a port's tests (mel_filter crate)."""
    assert _slaney_mel(60) == pytest.approx(0.9) and _slaney_mel(440) == pytest.approx(6.6)
    assert _slaney_hz(3) == pytest.approx(200.0)
    bank = mel_filterbank(22050, 2048, 128, 0.0, 11025.0)
    assert bank.shape == (128, 1025) and bank.dtype == np.float32
    np.testing.assert_allclose(bank[0, :6], LIBROSA_22050_2048_ROW0, atol=1e-7)
    np.testing.assert_allclose(bank[1, :9], LIBROSA_22050_2048_ROW1, atol=1e-7)
    np.testing.assert_allclose(mel_filterbank(), _reference_filterbank(16000, 800, 80, 55.0, 7600.0), atol=1e-7)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_mel_matches_numpy_reference(pad_mode: str) -> None:
    clips = [_chirp_and_noise(3.0, 0), _chirp_and_noise(3.0, 1)]
    batch = torch.from_numpy(np.stack(clips))
    mel = mel_spectrogram(batch, pad_mode=pad_mode)
    assert mel.dtype == torch.float32 and mel.shape == (2, 80, 1 + 48000 // 200)
    for got, wav in zip(mel.numpy(), clips, strict=True):
        expected = _reference_mel(wav, pad_mode)
        assert np.abs(got - expected).max() <= 1e-3
        assert expected.min() < -3 and expected.max() > 2  # the test covers the range, not just the floor
    single = mel_spectrogram(batch[1], pad_mode=pad_mode)
    torch.testing.assert_close(single, mel[1])


def test_reflect_and_constant_padding_differ_only_at_the_ends() -> None:
    wav = torch.from_numpy(_chirp_and_noise(1.0, 2))
    diff = (mel_spectrogram(wav, "reflect") - mel_spectrogram(wav, "constant")).abs().amax(dim=0)
    assert diff[2:-2].max() == 0 and diff.max() > 0


def test_window_starts_follow_upstream_rule() -> None:
    starts = window_starts(25, 10, 40)
    assert starts.tolist() == [0, 3, 6, 9, 12, 16, 19, 22, 24, 24]  # int(i * 3.2), clamped at 40 - 16
    assert window_starts(30, 4, 100).tolist() == [0, 2, 5, 8]


def test_mel_windows_cut_the_spectrogram() -> None:
    clips = torch.from_numpy(np.stack([_chirp_and_noise(1.0, 3), _chirp_and_noise(1.0, 4)]))
    mel = mel_spectrogram(clips)  # (2, 80, 81)
    windows = mel_windows(clips, fps=25, frames=30)
    assert windows.shape == (60, 1, 80, 16)
    starts = window_starts(25, 30, mel.shape[-1])
    for clip in range(2):
        for frame in (0, 7, 29):
            s = int(starts[frame])
            torch.testing.assert_close(windows[clip * 30 + frame, 0], mel[clip, :, s : s + 16])
    torch.testing.assert_close(windows[29, 0], mel[0, :, -16:])  # past the end: the last 16 steps


def test_short_audio_is_padded_with_silence() -> None:
    windows = mel_windows(torch.zeros(1000) + 0.1, fps=25, frames=2)  # 6 mel steps
    assert windows.shape == (2, 1, 80, 16)
    assert (windows[:, :, :, 6:] == -4).all()
    with pytest.raises(ValueError, match="too short"):
        mel_spectrogram(torch.zeros(300))
    with pytest.raises(ValueError, match="float"):
        mel_spectrogram(torch.zeros(1000, dtype=torch.int16))


def test_resample_keeps_speech_band_and_removes_aliases() -> None:
    t = np.arange(48000) / 48000
    tone = lambda hz: (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)  # noqa: E731
    low = resample_to_16k(tone(1000))
    assert low.dtype == np.float32 and low.shape == (16000,)
    assert np.abs(low[1000:-1000]).max() == pytest.approx(8000 / 32768, rel=0.01)
    high = resample_to_16k(tone(12000))  # would alias to 4 kHz without the low-pass
    assert np.abs(high[1000:-1000]).max() < 1e-3
    with pytest.raises(ValueError, match="int16"):
        resample_to_16k(np.zeros(480, dtype=np.float32))
    with pytest.raises(ValueError, match="mono"):
        resample_to_16k(np.zeros((480, 2), dtype=np.int16))
