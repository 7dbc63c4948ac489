"""When each written word is spoken, from the TTS's phoneme timings (for word-timed captions).

Piper reports one timing per phoneme, with a space phoneme between spoken words. The spoken
words do not always match the written ones one to one: espeak joins "of the" into one word and
reads "150" as three. When the counts match, each written word takes its spoken word's start;
otherwise the written words are laid over the phonemes in proportion to their length, which
keeps them in order and inside the speech.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.protocols import PhonemeTiming

SILENT = frozenset("^$_")
"""Piper's sentence start/end and padding symbols: no sound of a word."""
PUNCTUATION = frozenset(",.;:!?¡¿—…\"'«»()")


def spoken_words(phonemes: Sequence[PhonemeTiming]) -> list[tuple[float, int]]:
    """(start seconds, number of phonemes) of each spoken word, split at the space phonemes."""
    words: list[tuple[float, int]] = []
    fresh = True
    for p in phonemes:
        if p.phoneme == " ":
            fresh = True
        elif p.phoneme not in SILENT and p.phoneme not in PUNCTUATION:
            if fresh:
                words.append((p.start, 0))
                fresh = False
            start, count = words[-1]
            words[-1] = (start, count + 1)
    return words


def word_starts(words: Sequence[str], phonemes: Sequence[PhonemeTiming]) -> list[float]:
    """The second (from the audio's start) at which each of `words` begins to be heard."""
    if not words:
        return []
    spoken = spoken_words(phonemes)
    if not spoken:
        return [0.0] * len(words)
    if len(spoken) == len(words):
        return [start for start, _ in spoken]
    voiced = [p for p in phonemes if p.phoneme not in SILENT and p.phoneme not in PUNCTUATION and p.phoneme != " "]
    # phoneme-count fraction -> time, through every spoken word's start and the end of the speech
    counts = np.cumsum([0] + [n for _, n in spoken])
    xs = np.append(counts[:-1], counts[-1]) / counts[-1]
    ys = [start for start, _ in spoken] + [voiced[-1].start + voiced[-1].duration]
    lengths = np.array([len(w) for w in words], np.float64)
    before = (np.cumsum(lengths) - lengths) / lengths.sum()  # share of the text before each word
    return [float(t) for t in np.interp(before, xs, ys)]
