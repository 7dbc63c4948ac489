"""Phoneme timings -> viseme track: classes, coarticulation, closure, loudness."""

from __future__ import annotations

import numpy as np
import pytest

from models.lipsync.visemes import Viseme, classify, loudness, timings_from_alignment, viseme_track


def timings(spec: str, each: float = 0.1) -> list:
    """'h ə l o' -> phonemes of `each` seconds."""
    return timings_from_alignment([(p, round(each * 22050)) for p in spec.split()], 22050)


def test_stress_marks_take_the_next_sound_and_length_marks_the_previous() -> None:
    assert classify(["ˈ", "ɑ", "ː", "m"]) == [Viseme.AA, Viseme.AA, Viseme.AA, Viseme.MBP]
    assert classify(["^", "p", "?", "$"]) == [Viseme.REST, Viseme.MBP, Viseme.REST, Viseme.REST]
    assert classify(["ʃ", "u", "f", "θ", "i"]) == [Viseme.SH, Viseme.OO, Viseme.FV, Viseme.TH, Viseme.EE]


def test_alignment_samples_become_seconds() -> None:
    t = timings_from_alignment([("h", 2205), ("a", 4410)], 22050)
    assert (t[1].start, t[1].duration, t[1].end) == pytest.approx((0.1, 0.2, 0.3))


def test_track_has_one_row_per_frame_and_opens_on_vowels_closes_on_bilabials() -> None:
    ph = timings("^ m ɑ m ɑ m $", each=0.2)
    track = viseme_track(ph, 25)
    assert track.shape == (35, 3) and track.dtype == np.float32
    jaw = track[:, 0]
    assert jaw[12] > 0.7, "mid-vowel the jaw is open"  # the first ɑ spans 0.4-0.6 s = frames 10-14
    assert jaw[7] < 0.15 and jaw[17] < 0.15, "mid-m the lips close"
    round_at_oo = viseme_track(timings("^ u $", 0.3), 25)[11, 2]
    assert round_at_oo > 0.8


def test_mouth_anticipates_the_next_vowel() -> None:
    """Coarticulation: the jaw is already opening in the last frame before the vowel starts."""
    ph = timings("^ ɑ $", each=0.4)  # the vowel starts at 0.4 s = frame 10
    jaw = viseme_track(ph, 25)[:, 0]
    assert 0.05 < jaw[9] < jaw[10] < jaw[12]
    assert jaw[3] < 0.05, "well before the vowel the mouth is still at rest"


def test_louder_frames_open_wider() -> None:
    ph = timings("^ ɑ ɑ $", each=0.3)
    sr = 22050
    t = np.arange(round(1.2 * sr)) / sr
    quiet_then_loud = (np.sin(2 * np.pi * 200 * t) * np.where(t < 0.6, 2000, 16000)).astype(np.int16)
    track = viseme_track(ph, 25, 1.2, quiet_then_loud, sr)
    plain = viseme_track(ph, 25, 1.2)
    assert track[18, 0] > track[11, 0] + 0.2, "the loud half opens wider"
    assert plain[18, 0] == pytest.approx(plain[11, 0], abs=0.05)
    assert loudness(quiet_then_loud, sr, 25, 30).max() == pytest.approx(1.0, abs=0.05)


def test_empty_and_silent_input() -> None:
    assert viseme_track([], 25).shape == (0, 3)
    assert not viseme_track([], 25, duration=1.0).any()
