"""Idle life: blinks, a slight head sway and breathing, at every frame, speaking or not.

A still face reads as a frozen stream, so every frame carries some motion. The motion is a
pure function of (channel seed, frame index): any frame can be rendered in any order, again
after a restart, and two channels never move in lockstep.
"""

from __future__ import annotations

import math

import numpy as np

from models.lipsync.params import BLINK, BREATH, HEAD_DX, HEAD_DY, HEAD_TILT, N_PARAMS

BLINK_SLOT_S = 4.0
"""One blink (sometimes two) falls somewhere in each slot: about 15 a minute, as people do."""
BLINK_CLOSE_S = 0.06
BLINK_OPEN_S = 0.10
DOUBLE_BLINK_CHANCE = 0.15
BREATHS_PER_S = 0.22


class IdleMotion:
    def __init__(self, seed: int, fps: float) -> None:
        self.seed = seed
        self.fps = fps
        rng = np.random.default_rng([seed, 0xA11CE])
        self._phases = rng.uniform(0, 2 * math.pi, 6)
        self._slot_cache: dict[int, list[float]] = {}

    def _blinks_in_slot(self, slot: int) -> list[float]:
        """Start times (s) of the blinks in one slot, drawn from the slot's own random stream."""
        cached = self._slot_cache.get(slot)
        if cached is None:
            rng = np.random.default_rng([self.seed, slot])
            first = slot * BLINK_SLOT_S + rng.uniform(0.3, BLINK_SLOT_S - 0.8)
            cached = [first]
            if rng.random() < DOUBLE_BLINK_CHANCE:
                cached.append(first + BLINK_CLOSE_S + BLINK_OPEN_S + rng.uniform(0.05, 0.15))
            if len(self._slot_cache) > 64:
                self._slot_cache.clear()
            self._slot_cache[slot] = cached
        return cached

    def _blink(self, t: float) -> float:
        slot = int(t // BLINK_SLOT_S)
        value = 0.0
        for s in (slot - 1, slot):
            for start in self._blinks_in_slot(s) if s >= 0 else ():
                dt = t - start
                if 0 <= dt < BLINK_CLOSE_S:
                    value = max(value, dt / BLINK_CLOSE_S)
                elif BLINK_CLOSE_S <= dt < BLINK_CLOSE_S + BLINK_OPEN_S:
                    value = max(value, 1 - (dt - BLINK_CLOSE_S) / BLINK_OPEN_S)
        return value

    def params(self, first: int, n: int) -> np.ndarray:
        """Pose rows (n, N_PARAMS) for frames first..first+n-1, with the mouth left closed."""
        out = np.zeros((n, N_PARAMS), np.float32)
        t = (first + np.arange(n) + 0.5) / self.fps
        p = self._phases
        out[:, HEAD_DX] = 0.004 * np.sin(2 * np.pi * 0.11 * t + p[0]) + 0.002 * np.sin(2 * np.pi * 0.29 * t + p[1])
        out[:, HEAD_DY] = 0.002 * np.sin(2 * np.pi * 0.17 * t + p[2])
        out[:, HEAD_TILT] = 0.012 * np.sin(2 * np.pi * 0.07 * t + p[3]) + 0.005 * np.sin(2 * np.pi * 0.23 * t + p[4])
        out[:, BREATH] = np.sin(2 * np.pi * BREATHS_PER_S * t + p[5])
        out[:, BLINK] = [self._blink(float(x)) for x in t]
        return out
