"""Phoneme timings -> viseme track (jaw open, lip width, lip rounding per video frame).

Piper (espeak-ng IPA) gives one (phoneme, samples) pair per symbol. Each phoneme maps to a
viseme class with a target mouth shape; the track blends neighbouring targets with the
Cohen-Massaro dominance model, so the mouth starts moving toward a sound before it is heard
(anticipation) and lets go of it slowly (carry-over) — that coarticulation is what makes
lip motion read as speech instead of a flapping jaw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from models.lipsync.params import N_MOUTH


class Viseme(IntEnum):
    """Mouth-shape classes; the drawn avatar has one mouth drawing per class."""

    REST = 0  # silence: lips together, relaxed
    MBP = 1  # p b m: lips pressed
    FV = 2  # f v: lower lip under the upper teeth
    TH = 3  # θ ð l: tongue tip at the teeth, slightly open
    CONS = 4  # t d n s z k g h ŋ: teeth nearly together
    SH = 5  # ʃ ʒ tʃ dʒ ɹ: rounded, protruded, teeth showing
    EE = 6  # i ɪ j: spread, small opening
    AA = 7  # a ɑ æ ʌ: wide open
    EH = 8  # ɛ e ə ɜ ɚ: mid open
    OH = 9  # ɔ o ɒ: round and open
    OO = 10  # u ʊ w: small and round


# (jaw, width, round) target of each class.
VISEME_SHAPES: dict[Viseme, tuple[float, float, float]] = {
    Viseme.REST: (0.0, 0.0, 0.0),
    Viseme.MBP: (0.0, 0.1, 0.15),
    Viseme.FV: (0.12, 0.3, 0.0),
    Viseme.TH: (0.22, 0.25, 0.0),
    Viseme.CONS: (0.18, 0.35, 0.0),
    Viseme.SH: (0.2, 0.0, 0.7),
    Viseme.EE: (0.22, 0.9, 0.0),
    Viseme.AA: (0.9, 0.4, 0.0),
    Viseme.EH: (0.5, 0.5, 0.0),
    Viseme.OH: (0.62, 0.0, 0.65),
    Viseme.OO: (0.25, 0.0, 1.0),
}

# How strongly a class holds each of (jaw, width, round) against its neighbours. Lip closure for
# p/b/m and lip-teeth contact for f/v must be reached or the sync reads wrong, so they dominate;
# the jaw of a vowel dominates the jaw of the consonants around it.
_DOMINANCE: dict[Viseme, tuple[float, float, float]] = {
    Viseme.REST: (0.5, 0.5, 0.5),
    Viseme.MBP: (4.0, 1.5, 1.0),
    Viseme.FV: (3.0, 1.5, 1.0),
    Viseme.TH: (0.7, 0.6, 0.5),
    Viseme.CONS: (0.5, 0.5, 0.4),
    Viseme.SH: (0.8, 1.2, 1.5),
    Viseme.EE: (1.0, 1.5, 1.0),
    Viseme.AA: (1.2, 1.0, 1.0),
    Viseme.EH: (1.0, 1.0, 1.0),
    Viseme.OH: (1.2, 1.2, 1.5),
    Viseme.OO: (1.0, 1.5, 1.8),
}

LOUDNESS_WEIGHT = 0.6
"""How much the jaw follows loudness (0: phonemes alone). Louder syllables open wider, as they
do in real speech; it also makes the mouth track the voice's rhythm, not just its phonemes."""
ANTICIPATION_S = 0.05
"""Time constant of a vowel's pull before it sounds (consonants reach half as far: a /m/ must
close the lips at its own time without dragging the vowels around it shut)."""
CARRYOVER_S = 0.035
"""Time constant of the hold on a vowel that has ended."""
_CONSONANT_REACH = 0.5

_CLASSES_BY_SYMBOLS: dict[Viseme, str] = {
    Viseme.REST: " _^$.,!?;:-\"'()…—",
    Viseme.MBP: "pbmɱɓʙ",
    Viseme.FV: "fvɸβʋⱱ",
    Viseme.TH: "θðlɫɬɮɭʎʟ",
    Viseme.CONS: "tdnszkɡgŋhxçʔɾɣχʁʀqcɟɲɳʈɖʂʐɕʑħʕɦ0123456789",
    Viseme.SH: "ʃʒɹrɻɺ",
    Viseme.EE: "iɪjyʏᵻɨɘe",
    Viseme.AA: "aɑæʌɐɶ",
    Viseme.EH: "ɛəɜɚœɞɤ",
    Viseme.OH: "ɔoɒøɵ",
    Viseme.OO: "uʊwʍɯʉɥɰ",
}
PHONEME_VISEMES: dict[str, Viseme] = {s: v for v, syms in _CLASSES_BY_SYMBOLS.items() for s in syms}

_VOWELS = {Viseme.EE, Viseme.AA, Viseme.EH, Viseme.OH, Viseme.OO, Viseme.REST}
_TAKES_NEXT = "ˈˌ"  # stress marks come before the vowel they stress
_TAKES_PREVIOUS = "ːˑ˞ʰʲˤ̧̪̩̯̃"  # length marks and diacritics modify what came before


@dataclass(frozen=True, slots=True)
class PhonemeTiming:
    """One phoneme of synthesised speech, timed from the start of its audio."""

    phoneme: str
    start: float  # seconds
    duration: float  # seconds

    @property
    def end(self) -> float:
        return self.start + self.duration


def timings_from_alignment(pairs: Iterable[tuple[str, int]], sample_rate: int) -> list[PhonemeTiming]:
    """(phoneme, number of samples) pairs, as Piper reports them, -> timed phonemes."""
    out: list[PhonemeTiming] = []
    pos = 0
    for phoneme, samples in pairs:
        n = int(samples)
        out.append(PhonemeTiming(phoneme, pos / sample_rate, n / sample_rate))
        pos += n
    return out


def classify(phonemes: Sequence[str]) -> list[Viseme]:
    """Viseme class of each phoneme symbol; stress and length marks borrow from a neighbour."""
    direct: list[Viseme | None] = [
        None if p in _TAKES_NEXT or p in _TAKES_PREVIOUS else PHONEME_VISEMES.get(p, Viseme.CONS) for p in phonemes
    ]
    out = list(direct)
    for i, p in enumerate(phonemes):
        if out[i] is not None:
            continue
        order = range(i + 1, len(direct)) if p in _TAKES_NEXT else range(i - 1, -1, -1)
        out[i] = next((direct[j] for j in order if direct[j] is not None), Viseme.REST)
    return [v if v is not None else Viseme.REST for v in out]


def loudness(audio: np.ndarray, sample_rate: int, fps: float, n: int) -> np.ndarray:
    """RMS of the audio around each frame's mid-time (a window of two frames), over its 90th percentile."""
    x = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
    hop = sample_rate / fps
    centers = ((np.arange(n) + 0.5) * hop).astype(np.int64)
    lo, hi = np.clip(centers - int(hop), 0, len(x)), np.clip(centers + int(hop), 0, len(x))
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    rms = np.sqrt((energy[hi] - energy[lo]) / np.maximum(hi - lo, 1))
    ref = float(np.percentile(rms, 90)) if n else 0.0
    return rms / ref if ref > 0 else np.zeros(n)


def viseme_track(
    phonemes: Sequence[PhonemeTiming],
    fps: float,
    duration: float | None = None,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
) -> np.ndarray:
    """Mouth shape per video frame: float32 array (frames, 3) of (jaw, width, round).

    Frame i shows time (i + 0.5) / fps: the middle of the 1/fps it is on screen. `duration`
    (seconds, default: the end of the last phoneme) fixes the number of frames. With the
    speech `audio` (and its `sample_rate`) the jaw also follows loudness (LOUDNESS_WEIGHT).
    """
    end = duration if duration is not None else (phonemes[-1].end if phonemes else 0.0)
    n = max(0, math.ceil(end * fps - 1e-9))
    if n == 0:
        return np.zeros((0, N_MOUTH), np.float32)
    if not phonemes:
        return np.zeros((n, N_MOUTH), np.float32)
    classes = classify([p.phoneme for p in phonemes])
    targets = np.array([VISEME_SHAPES[c] for c in classes], np.float64)  # (P, 3)
    alpha = np.array([_DOMINANCE[c] for c in classes], np.float64)  # (P, 3)
    starts = np.array([p.start for p in phonemes])
    ends = np.array([p.end for p in phonemes])
    t = (np.arange(n) + 0.5) / fps
    before = np.clip(starts[None, :] - t[:, None], 0.0, None)  # (T, P): time until the phoneme starts
    after = np.clip(t[:, None] - ends[None, :], 0.0, None)  # time since it ended
    reach = np.where([c in _VOWELS for c in classes], 1.0, _CONSONANT_REACH)[None, :]
    weight = np.exp(-before / (ANTICIPATION_S * reach) - after / (CARRYOVER_S * reach))  # 1 inside the phoneme
    dom = weight[:, :, None] * alpha[None, :, :]  # (T, P, 3)
    # the tiny constant is a silent REST far from any phoneme (its target is all zeros)
    track = (dom * targets[None]).sum(1) / (dom.sum(1) + 1e-9)
    if audio is not None and sample_rate:
        gain = (1 - LOUDNESS_WEIGHT) + LOUDNESS_WEIGHT * 1.2 * loudness(audio, sample_rate, fps, n)
        track[:, 0] = np.clip(track[:, 0] * gain, 0.0, 1.0)
    return track.astype(np.float32)
