"""The Program's FrameSource for an avatar channel: idle motion plus speech cues, rendered by the
process's one lip-sync service (batched with every other channel's frames, by when they air)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.lipsync.base import PreparedFace
from models.lipsync.idle import IdleMotion
from models.lipsync.params import MOUTH
from models.lipsync.service import LipSyncService
from stream.program import Program


class FaceSource:
    """The Program's FrameSource: idle motion + speech cues -> the shared lip-sync renderer."""

    def __init__(self, face: PreparedFace, lipsync: LipSyncService, idle: IdleMotion, *, key: str = "") -> None:
        self.face = face
        self.lipsync = lipsync
        self.idle = idle
        self.key = key
        self._due: Callable[[int], float | None] = lambda frame: None

    def attach(self, program: Program) -> None:
        """Called by the Program showing these frames: each render is due when its first frame airs
        and expires when its last one does (the renderer sheds what can no longer air), and the
        channel's name keys its share of the shared renderer."""
        self.key = self.key or program.name
        self._due = program.due

    async def render(self, first: int, cues: np.ndarray) -> np.ndarray:
        params = self.idle.params(first, len(cues))
        params[:, MOUTH] = cues
        due, last = self._due(first), self._due(first + len(cues) - 1)
        return await self.lipsync.render(self.face, params, deadline=due, key=self.key, expires=last)

    def still(self) -> np.ndarray:
        return self.face.still
