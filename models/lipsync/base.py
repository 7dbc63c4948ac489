"""What every face renderer (drawn sprite, photo warp) offers the lip-sync service.

A renderer turns a batch of (prepared face, pose row) pairs into frames in a fixed number of
tensor calls (or one SIMD loop on a CPU); the faces may belong to different channels. Preparation
(rasterising art, building warp fields, moving tensors to the device) happens once per channel,
never per frame. Frames go out in the encoder's format, I420, straight into host memory the
caller leased (models/frame_ring.py); RGB is the reference picture, for tests and stills.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from models.protocols import PreparedFace


class FaceRenderer(Protocol):
    kind: str

    def prepare(self, pack_dir: Path, size: tuple[int, int]) -> PreparedFace:
        """Load the pack at `pack_dir` for frames of `size`; raises models.avatars.PackError."""
        ...

    def render_i420(
        self,
        faces: Sequence[PreparedFace],
        params: np.ndarray,
        into: Sequence[np.ndarray],
        *,
        frames: np.ndarray | None = None,
        audio: Sequence[np.ndarray] | None = None,
    ) -> None:
        """faces[i] posed by params[i] (float32 (B, N_PARAMS), see params.py) -> into[i], uint8 I420
        (height * 3 // 2, width). All faces share one size and were prepared by this renderer.
        Audio-driven renderers also take each frame's timeline number and its int16 16 kHz audio
        window (models/lipsync/mel.py FRAME_WINDOW); the others ignore them.
        Blocking: call it from an executor thread, never from the event loop."""
        ...

    def render_rgb(self, faces: Sequence[PreparedFace], params: np.ndarray) -> np.ndarray:
        """The same frames as uint8 (B, H, W, 3) RGB."""
        ...
