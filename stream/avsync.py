"""Measure lip-sync in a clip: cross-correlate the audio envelope with how open the mouth is.

The mouth signal is how far the mouth region is from its usual look (mean absolute difference
from the per-pixel median over the clip), sampled at each frame's mid-time; the audio signal is
the speech envelope (RMS, 10 ms hops). Both lose their slow trends (head sway, phrase level)
before the lag that best lines them up is taken as the A/V offset: positive when the picture
is late.
The mouth region comes from the clip's `avatarcast mouth_box=` comment (written by
`avatarcast render`), else it is found as the region that changes most over the clip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

HOP_S = 0.01
MAX_LAG_S = 0.3


@dataclass(frozen=True)
class AvSync:
    offset_ms: float
    """Lag of the mouth behind the voice (ms); negative: the mouth leads."""
    correlation: float
    """Pearson correlation of the two signals at that lag (1 = perfect)."""
    video_s: float
    audio_s: float
    frames: int
    mouth_box: tuple[int, int, int, int]


def _mouth_box_from_comment(container: av.container.InputContainer) -> tuple[int, int, int, int] | None:
    m = re.search(r"mouth_box=(\d+),(\d+),(\d+),(\d+)", container.metadata.get("comment", ""))
    return tuple(int(g) for g in m.groups()) if m else None  # type: ignore[return-value]


def _busiest_box(frames: np.ndarray) -> tuple[int, int, int, int]:
    """The window (1/5 of the width, 1/8 of the height) whose pixels vary most over time."""
    _, h, w = frames.shape
    std = frames.std(axis=0)
    bw, bh = max(8, w // 5), max(8, h // 8)
    integral = np.pad(std, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = integral[bh:, bw:] - integral[:-bh, bw:] - integral[bh:, :-bw] + integral[:-bh, :-bw]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y), int(x + bw), int(y + bh)


def _read(path: Path) -> tuple[np.ndarray, float, np.ndarray, int, tuple[int, int, int, int] | None]:
    with av.open(str(path)) as container:
        box = _mouth_box_from_comment(container)
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate or vstream.guessed_rate or 25)
        luma = [f.to_ndarray(format="gray").astype(np.float32) for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = [r.to_ndarray().ravel() for f in container.decode(audio=0) for r in resampler.resample(f)]
    return np.stack(luma), fps, np.concatenate(chunks), rate, box


def measure(path: Path, mouth_box: tuple[int, int, int, int] | None = None) -> AvSync:
    frames, fps, audio, rate, box = _read(Path(path))
    box = mouth_box or box or _busiest_box(frames)
    x0, y0, x1, y1 = box
    crop = frames[:, y0:y1, x0:x1]
    motion = np.abs(crop - np.median(crop, axis=0)).mean(axis=(1, 2))

    hop = round(rate * HOP_S)
    n_hops = len(audio) // hop
    envelope = np.sqrt((audio[: n_hops * hop].reshape(n_hops, hop) ** 2).mean(1))
    envelope = np.convolve(envelope, np.ones(3) / 3, mode="same")  # a 30 ms smoother
    t = (np.arange(n_hops) + 0.5) * HOP_S
    mouth = _detrend(np.interp(t, (np.arange(len(motion)) + 0.5) / fps, motion))
    envelope = _detrend(envelope)

    max_lag = round(MAX_LAG_S / HOP_S)
    lags = np.arange(-max_lag, max_lag + 1)
    scores = np.array([_corr(envelope, mouth, lag) for lag in lags])
    best = int(np.nanargmax(scores))
    shift = 0.0
    if 0 < best < len(scores) - 1:  # parabolic refinement between the 10 ms steps
        a, b, c = scores[best - 1 : best + 2]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
    return AvSync(
        offset_ms=float((lags[best] + shift) * HOP_S * 1000),
        correlation=float(scores[best]),
        video_s=len(frames) / fps,
        audio_s=len(audio) / rate,
        frames=len(frames),
        mouth_box=(int(x0), int(y0), int(x1), int(y1)),
    )


def _detrend(x: np.ndarray, window_s: float = 1.0) -> np.ndarray:
    n = max(1, round(window_s / HOP_S))
    return x - np.convolve(x, np.ones(n) / n, mode="same")


def _corr(audio_env: np.ndarray, mouth: np.ndarray, lag: int) -> float:
    """Correlation of audio(t) with mouth(t + lag): a positive lag means the mouth comes later."""
    if lag >= 0:
        a, m = audio_env[: len(audio_env) - lag], mouth[lag:]
    else:
        a, m = audio_env[-lag:], mouth[: len(mouth) + lag]
    n = min(len(a), len(m))
    a, m = a[:n], m[:n]
    if n < 10 or a.std() == 0 or m.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, m)[0, 1])
