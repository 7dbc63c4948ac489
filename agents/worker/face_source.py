"""The Program's FrameSource for an avatar channel: idle motion plus speech cues, rendered by the
process's lip-sync service (batched with every other channel's frames, by when they air) straight
into the channel's frame ring, in the encoder's format (I420)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.batcher import Overloaded
from models.lipsync.idle import IdleMotion
from models.lipsync.params import MOUTH
from models.protocols import LipSync, PreparedFace
from stream.frames import to_i420
from stream.program import Program

RING_SLOTS = 24
"""Frames a channel can hold at once: rendered ahead (3), rendering (2), queued at the encoder (up to
8), the last one shown; the rest is slack. A frame's slot is free again once nobody holds it."""


class FaceSource:
    """The Program's FrameSource: idle motion + speech cues -> the shared lip-sync renderer."""

    def __init__(self, face: PreparedFace, lipsync: LipSync, idle: IdleMotion, *, key: str = "") -> None:
        self.face = face
        self.lipsync = lipsync
        self.idle = idle
        self.key = key
        self.ring = lipsync.frame_ring(face, RING_SLOTS, key or "frames")
        self._still = to_i420(face.still)
        self._due: Callable[[int], float | None] = lambda frame: None

    def attach(self, program: Program) -> None:
        """Called by the Program showing these frames: each render is due when its first frame airs
        and expires when its last one does (the renderer sheds what can no longer air), and the
        channel's name keys its share of the shared renderer."""
        self.key = self.key or program.name
        self._due = program.due

    async def render(self, first: int, cues: np.ndarray) -> list[np.ndarray]:
        params = self.idle.params(first, len(cues))
        params[:, MOUTH] = cues
        frames = self.ring.lease(len(cues))
        if frames is None:  # every slot is still held downstream: show the last frame again
            raise Overloaded(f"{self.key}: all {RING_SLOTS} frame slots are in use")
        due, last = self._due(first), self._due(first + len(cues) - 1)
        await self.lipsync.render(self.face, params, frames, deadline=due, key=self.key, expires=last)
        return frames

    def still(self) -> np.ndarray:
        return self._still
