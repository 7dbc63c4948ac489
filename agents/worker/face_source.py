"""The Program's FrameSource for an avatar channel: idle motion plus speech cues, rendered by the
process's lip-sync service (batched with every other channel's frames, by when they air) straight
into the channel's frame ring, in the encoder's format (I420).

An audio-driven face (a neural model) also gets, in each frame's slot of the ring, the audio its
mouth is drawn from: the timeline's own audio from the frame's time on (speech is synthesised
ahead, so the 0.2 s it looks ahead are usually queued already), at 16 kHz.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import resample_poly

from models.batcher import Overloaded
from models.lipsync.idle import IdleMotion
from models.lipsync.mel import FRAME_PAD
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
        self._window = getattr(face, "audio_window", 0)
        """16 kHz samples of audio each frame is drawn from (0: the face is not audio-driven)."""
        self._program: Program | None = None

    def attach(self, program: Program) -> None:
        """Called by the Program showing these frames: each render is due when its first frame airs
        and expires when its last one does (the renderer sheds what can no longer air), and the
        channel's name keys its share of the shared renderer."""
        self.key = self.key or program.name
        self._due = program.due
        self._program = program

    async def render(self, first: int, cues: np.ndarray) -> list[np.ndarray]:
        params = self.idle.params(first, len(cues))
        params[:, MOUTH] = cues
        frames = self.ring.lease(len(cues))
        if frames is None:  # every slot is still held downstream: show the last frame again
            raise Overloaded(f"{self.key}: all {RING_SLOTS} frame slots are in use")
        due, last = self._due(first), self._due(first + len(cues) - 1)
        extras = self._audio(first, frames) if self._window else {}
        await self.lipsync.render(self.face, params, frames, deadline=due, key=self.key, expires=last, **extras)
        return frames

    def _audio(self, first: int, frames: list[np.ndarray]) -> dict[str, object]:
        """Each frame's audio window, written into its ring slot (it crosses to the GPU service there)."""
        assert self._program is not None, "attach the source to its Program first"
        program, windows = self._program, []
        for i, frame in enumerate(frames):
            start = program.fmt.frame_start(first + i) - 3 * FRAME_PAD  # 48 kHz: 3 samples per 16 kHz one
            pcm = program.audio_between(start, start + 3 * self._window)
            window = self.ring.extra(frame).view(np.int16)
            if pcm.any():
                window[:] = np.clip(resample_poly(pcm.astype(np.float32), 1, 3), -32768, 32767)
            else:
                window[:] = 0
            windows.append(window)
        return {"frames": np.arange(first, first + len(frames)), "audio": windows}

    def still(self) -> np.ndarray:
        return self._still
