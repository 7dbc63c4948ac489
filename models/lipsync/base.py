"""What every face renderer (drawn sprite, photo warp) offers the lip-sync service.

A renderer turns a batch of (prepared face, pose row) pairs into RGB frames in one tensor call;
the faces may belong to different channels. Preparation (rasterising art, building warp fields,
moving tensors to the device) happens once per channel, never per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class PreparedFace(Protocol):
    """One avatar pack made ready for one output size on one device."""

    kind: str
    """The pack kind: "sprite" or "photo"."""
    size: tuple[int, int]
    """(width, height) of the frames it renders."""
    mouth_box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) of the mouth region in rendered frames, for tests and A/V measurement."""
    still: np.ndarray
    """uint8 (height, width, 3) RGB neutral frame, shown when rendering fails or runs late."""


class FaceRenderer(Protocol):
    kind: str

    def prepare(self, pack_dir: Path, size: tuple[int, int]) -> PreparedFace:
        """Load the pack at `pack_dir` for frames of `size`; raises models.avatars.PackError."""
        ...

    def render(self, faces: Sequence[PreparedFace], params: np.ndarray) -> np.ndarray:
        """faces[i] posed by params[i] (float32 (B, N_PARAMS), see params.py) -> uint8 (B, H, W, 3).

        All faces share one size and were prepared by this renderer. Blocking: call it from an
        executor thread, never from the event loop.
        """
        ...
