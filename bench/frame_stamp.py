"""The time a frame left the program, drawn into its top rows and read back at a receiver.

32 black/white blocks (two rows of 16): 24 bits of milliseconds on CLOCK_MONOTONIC (one clock for
every process on the machine) and an 8-bit check. Blocks this large survive H.264 and scaling.
"""

from __future__ import annotations

import time

import numpy as np

BLOCKS_PER_ROW, ROWS = 16, 2
WRAP = 1 << 24


def now_ms() -> int:
    return int(time.monotonic() * 1000) % WRAP


def _check(ms: int) -> int:
    return (((ms >> 16) & 0xFF) + ((ms >> 8) & 0xFF) + (ms & 0xFF)) & 0xFF ^ 0xA5


def draw_stamp(image: np.ndarray, ms: int) -> None:
    """Write `ms` into the top rows of `image` (RGB, in place)."""
    block = image.shape[1] // BLOCKS_PER_ROW
    word = (ms << 8) | _check(ms)
    for i in range(BLOCKS_PER_ROW * ROWS):
        y, x = divmod(i, BLOCKS_PER_ROW)
        image[y * block : (y + 1) * block, x * block : (x + 1) * block] = 235 if word >> (31 - i) & 1 else 16


def stamp_rows(width: int) -> int:
    """How many pixel rows at the top of a frame `width` wide the stamp takes."""
    return ROWS * (width // BLOCKS_PER_ROW)


def read_stamp(gray: np.ndarray) -> int | None:
    """The ms stamped into a (possibly scaled) grey frame, or None when it does not check out."""
    block = gray.shape[1] // BLOCKS_PER_ROW
    if gray.shape[0] < ROWS * block:
        return None
    word, q = 0, block // 4
    for i in range(BLOCKS_PER_ROW * ROWS):
        y, x = divmod(i, BLOCKS_PER_ROW)
        centre = gray[y * block + q : (y + 1) * block - q, x * block + q : (x + 1) * block - q]
        word = (word << 1) | int(centre.mean() > 128)
    ms = word >> 8
    return ms if word & 0xFF == _check(ms) else None


def age_ms(seen_ms: float, stamp: int | None) -> float | None:
    """How old a stamp read at `seen_ms` is (None: no stamp read)."""
    return None if stamp is None else (int(seen_ms) - stamp) % WRAP
