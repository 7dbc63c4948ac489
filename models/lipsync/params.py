"""One frame's face pose as a row of floats.

Every renderer (sprite, photo warp) takes a batch of frames as one float32 array of shape
(batch, N_PARAMS), so frames from many channels render in one tensor call. The columns:

  jaw        0 closed .. 1 widest open
  width      0 neutral .. 1 spread lips ("ee")
  round      0 neutral .. 1 rounded, protruded lips ("oo")
  blink      0 eyes open .. 1 closed
  head_dx    head shift right, as a fraction of the frame width  (idle sway: |x| <= ~0.01)
  head_dy    head shift down, as a fraction of the frame height (idle sway: |y| <= ~0.01)
  head_tilt  head roll in radians, clockwise on screen          (idle sway: |t| <= ~0.03)
  breath     -1 .. 1 breathing phase; the body rises with it by a few pixels

The first three (the mouth) come from the viseme track of the speech; the rest from idle motion.
"""

from __future__ import annotations

import numpy as np

PARAM_NAMES = ("jaw", "width", "round", "blink", "head_dx", "head_dy", "head_tilt", "breath")
N_PARAMS = len(PARAM_NAMES)
JAW, WIDTH, ROUND, BLINK, HEAD_DX, HEAD_DY, HEAD_TILT, BREATH = range(N_PARAMS)
MOUTH = slice(JAW, ROUND + 1)
"""Columns driven by speech (the viseme track): jaw, width, round."""
N_MOUTH = ROUND + 1


def neutral(n: int) -> np.ndarray:
    """n frames of a still, closed-mouth face with open eyes."""
    return np.zeros((n, N_PARAMS), np.float32)
