"""Wav2Lip's audio features in torch: batched, on any device, without librosa.

Wav2Lip (`audio.py`, `hparams.py` upstream) feeds its networks an 80-band mel spectrogram of
16 kHz audio: pre-emphasis 0.97, STFT with a periodic Hann window of 800 samples, hop 200
(80 steps per second), `center=True` padding, magnitude, Slaney mel filterbank (55..7600 Hz,
area-normalised), 20*log10 with a floor at -100 dB, minus the 20 dB reference level, scaled
from [-100, 0] dB to [-4, 4] and clipped. A face frame at `fps` sees the 16 steps (0.2 s) that
start at step int(i * 80 / fps).

Padding: upstream pinned librosa 0.7.0, whose STFT pads by reflection; librosa >= 0.9 pads with
zeros instead (LiveTalking installs an unpinned librosa). Only the first and last ~2 steps differ;
`pad_mode` picks either.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import torch
from scipy.signal import resample_poly

__all__ = [
    "HOP",
    "MEL_STEPS_PER_SECOND",
    "N_FFT",
    "SAMPLE_RATE",
    "WINDOW_STEPS",
    "mel_filterbank",
    "mel_spectrogram",
    "mel_windows",
    "resample_to_16k",
    "window_starts",
]

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
F_MIN = 55.0
F_MAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
MEL_STEPS_PER_SECOND = SAMPLE_RATE // HOP  # 80
WINDOW_STEPS = 16  # 0.2 s of mel steps per video frame
PROJECT_RATE = 48_000

PadMode = Literal["reflect", "constant"]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_step = math.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * (200.0 / 3))


@functools.cache
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = F_MIN, fmax: float = F_MAX
) -> np.ndarray:
    """float32 (n_mels, n_fft // 2 + 1): triangles on the Slaney mel scale, each scaled to unit area
    (2 / bandwidth), as librosa's `filters.mel(htk=False, norm="slaney")` builds them."""
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    rising = (bins[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - bins[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def mel_spectrogram(audio16k: torch.Tensor, pad_mode: PadMode = "reflect") -> torch.Tensor:
    """(B, N) or (N,) float audio at 16 kHz in [-1, 1] -> (B, 80, 1 + N // 200) (or (80, T)) in [-4, 4].

    Runs on the tensor's device in float32 (float64 input stays float64). N must exceed 400
    samples (25 ms) for reflection padding.
    """
    single = audio16k.dim() == 1
    audio = audio16k[None] if single else audio16k
    if audio.dim() != 2:
        raise ValueError(f"expected audio (N,) or (B, N), got shape {tuple(audio16k.shape)}")
    if not audio.is_floating_point():
        raise ValueError(f"expected float audio in [-1, 1], got {audio.dtype}; divide int16 PCM by 32768")
    if audio.shape[1] <= N_FFT // 2:
        raise ValueError(f"{audio.shape[1]} samples is too short: the STFT needs more than {N_FFT // 2} (25 ms)")
    dtype = audio.dtype if audio.dtype == torch.float64 else torch.float32
    audio = audio.to(dtype)
    emphasised = torch.cat((audio[:, :1], audio[:, 1:] - PREEMPHASIS * audio[:, :-1]), dim=1)
    window = torch.hann_window(WIN, periodic=True, dtype=dtype, device=audio.device)
    spectrum = torch.stft(
        emphasised,
        n_fft=N_FFT,
        hop_length=HOP,
        win_length=WIN,
        window=window,
        center=True,
        pad_mode=pad_mode,
        return_complex=True,
    ).abs()
    basis = torch.from_numpy(mel_filterbank()).to(device=audio.device, dtype=dtype)
    mel = basis @ spectrum
    floor = 10.0 ** (MIN_LEVEL_DB / 20.0)
    db = 20.0 * torch.log10(mel.clamp_min(floor)) - REF_LEVEL_DB
    normalised = ((2 * MAX_ABS) * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS).clamp(-MAX_ABS, MAX_ABS)
    return normalised[0] if single else normalised


def window_starts(fps: float, frames: int, mel_steps: int) -> np.ndarray:
    """int64 (frames,): the first mel step each video frame sees, by upstream's inference rule
    (int(i * (80 / fps)), computed in that order so rounding matches), clamped so that the last
    windows are the final 16 steps."""
    if fps <= 0 or frames < 0:
        raise ValueError(f"fps must be positive and frames non-negative, got fps={fps}, frames={frames}")
    multiplier = float(MEL_STEPS_PER_SECOND) / fps
    starts = np.array([int(i * multiplier) for i in range(frames)], dtype=np.int64)
    return np.minimum(starts, max(mel_steps - WINDOW_STEPS, 0))


def mel_windows(audio16k: torch.Tensor, fps: float, frames: int, pad_mode: PadMode = "reflect") -> torch.Tensor:
    """Mel windows for `frames` video frames at `fps`: (frames, 1, 80, 16), or (B * frames, 1, 80, 16)
    for (B, N) audio (clip 0's frames first).

    Audio shorter than 16 steps (~0.19 s) is padded on the right with silence (-4) to one window;
    upstream would hand the network a narrower window, which it cannot take.
    """
    mel = mel_spectrogram(audio16k, pad_mode)
    if mel.dim() == 2:
        mel = mel[None]
    if mel.shape[-1] < WINDOW_STEPS:
        mel = torch.nn.functional.pad(mel, (0, WINDOW_STEPS - mel.shape[-1]), value=-MAX_ABS)
    starts = torch.from_numpy(window_starts(fps, frames, mel.shape[-1])).to(mel.device)
    index = starts[:, None] + torch.arange(WINDOW_STEPS, device=mel.device)  # (frames, 16)
    windows = mel[:, :, index]  # (B, 80, frames, 16)
    return windows.permute(0, 2, 1, 3).reshape(-1, 1, N_MELS, WINDOW_STEPS)


def resample_to_16k(pcm_int16_48k: np.ndarray) -> np.ndarray:
    """Mono int16 PCM at the project's 48 kHz -> float32 in [-1, 1] at 16 kHz (ceil(N / 3) samples).

    A polyphase FIR low-pass (scipy's resample_poly, Kaiser window) removes everything above 8 kHz
    before keeping every third sample. Resample whole utterances, or chunks with some overlap:
    each call treats the audio outside the chunk as silence.
    """
    pcm = np.asarray(pcm_int16_48k)
    if pcm.ndim != 1:
        raise ValueError(f"expected mono PCM (N,), got shape {pcm.shape}")
    if pcm.dtype != np.int16:
        raise ValueError(f"expected int16 PCM, got {pcm.dtype}")
    audio = pcm.astype(np.float32) / 32768.0
    return resample_poly(audio, 1, PROJECT_RATE // SAMPLE_RATE).astype(np.float32)


FRAME_PAD = N_FFT // 2
"""Samples (16 kHz) a frame's window reaches before its first and after its last STFT centre."""
FRAME_WINDOW = (WINDOW_STEPS - 1) * HOP + 2 * FRAME_PAD + HOP
"""16 kHz samples one video frame's audio takes: its 16 steps (0.2 s from the frame's own time) and the
STFT's reach either side (4,000 samples)."""


def frame_mel_windows(audio16k: torch.Tensor) -> torch.Tensor:
    """(B, FRAME_WINDOW) float audio, each starting FRAME_PAD samples before its frame's time ->
    (B, 1, 80, 16): for each frame, the same 16 mel steps a whole-clip spectrogram has at that time
    (the steps whose centres lie at the frame's time + 0, 12.5, ... 187.5 ms), one batched call for
    frames of any channels."""
    if audio16k.dim() != 2 or audio16k.shape[1] != FRAME_WINDOW:
        raise ValueError(f"expected (B, {FRAME_WINDOW}) audio windows, got {tuple(audio16k.shape)}")
    first = FRAME_PAD // HOP  # the step centred on the frame's own time
    mel = mel_spectrogram(audio16k)[:, :, first : first + WINDOW_STEPS]
    return mel[:, None]
