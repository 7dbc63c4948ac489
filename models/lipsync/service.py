"""Lip-sync in this process: render jobs from every channel, batched by deadline (a LipSync).

Channels ask for a frame or two at a time, each due on air at a known loop time. The shared
deadline batcher (models/batcher.py) gathers the jobs of all channels into one batch — closing it
when it is full or when waiting longer would make the earliest frame late — and the render
thread draws it with one tensor call per (pack kind, frame size). With N talking channels that is
one batched call instead of N small ones, the thing peers do not do (notes/anchors.md). The queue
is bounded (in total and per channel): when it is full a new job fails at once with Overloaded and
the channel shows its previous frame instead of waiting.

Frames land as I420 in the memory the channel leased from its FrameRing (pinned on CUDA), so
nothing is allocated, converted or copied again on the way to the encoder. The GPU service
process (server.py) runs this same service for the channels of every worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.avatars import PackError, pack_kind
from models.batcher import DeadlineBatcher, Expired, Overloaded
from models.devices import resolve_device
from models.frame_ring import FrameRing
from models.lipsync.base import FaceRenderer
from models.lipsync.i420 import i420_rows
from models.lipsync.params import N_PARAMS, neutral
from models.lipsync.sprite import SpriteFace, SpriteRenderer
from models.protocols import PreparedFace

__all__ = ["Expired", "LipSyncService", "Overloaded"]

MAX_WAIT_S = 0.005
"""A batch waits at most this long for more channels' jobs (less when a deadline is near). Short: on
a CPU a batch saves little per frame, and every millisecond waited is slack taken from the frame;
jobs that queue while the renderer is busy batch anyway."""


COST_BATCH = 8
"""Frames per calibration render (frame_cost): about what a channel's render-ahead and its neighbours
batch up."""


@dataclasses.dataclass(frozen=True, slots=True)
class _RenderJob:
    face: PreparedFace
    params: np.ndarray
    into: Sequence[np.ndarray]
    frames: np.ndarray | None  # timeline frame numbers (a video pack's loop position)
    audio: Sequence[np.ndarray] | None  # per frame, int16 16 kHz windows (audio-driven renderers)


@dataclasses.dataclass(frozen=True, slots=True)
class NeuralModel:
    """`lipsync.model` and its checkpoint: photo and video packs then render with that network."""

    arch: str  # wav2lip | wav2lip256
    checkpoint: Path


class LipSyncService:
    """Frames for every channel. `batching=False` renders one job per call (benchmarks compare)."""

    def __init__(
        self,
        device: str = "auto",
        *,
        max_batch: int = 32,
        max_queue_frames: int = 512,
        batching: bool = True,
        max_wait_s: float = MAX_WAIT_S,
        sprite_kernel: str = "auto",
        neural: NeuralModel | None = None,
    ) -> None:
        """sprite_kernel: how drawn avatars render (models/lipsync/sprite.py KERNELS): auto is the
        OpenCV kernel on a CPU, the batched torch one elsewhere. neural: the network photo and video
        packs render with (its checkpoint loads now: a wrong file fails here, at start)."""
        self.device = resolve_device(device)
        self.sprite_kernel = sprite_kernel
        self.neural = neural
        self.batcher: DeadlineBatcher[_RenderJob, None] = DeadlineBatcher(
            self._render_batch,
            name="lipsync",
            max_batch=max_batch,
            max_queue=max_queue_frames,
            max_queue_per_key=max(max_batch, max_queue_frames // 4),
            max_wait_s=max_wait_s,
            batching=batching,
        )
        self._renderers: dict[str, FaceRenderer] = {}
        self._faces: dict[tuple[Path, tuple[int, int], int], PreparedFace] = {}
        self._prepare_lock = threading.Lock()  # channels prepare in executor threads
        self._stats_lock = threading.Lock()  # the render thread counts, the loop reads
        self.stats: Counter[str] = Counter()
        """Per tensor call: batches (calls), frames, errors; rejected: jobs refused (Overloaded)."""
        self.batch_sizes: Counter[int] = Counter()
        """Tensor calls by frames in the call."""
        self.render_seconds = 0.0
        if neural is not None:
            self.renderer("wav2lip")

    @property
    def max_batch(self) -> int:
        return self.batcher.max_batch

    @max_batch.setter
    def max_batch(self, frames: int) -> None:
        self.batcher.max_batch = frames

    @property
    def max_queue_frames(self) -> int:
        return self.batcher.max_queue

    @max_queue_frames.setter
    def max_queue_frames(self, frames: int) -> None:
        self.batcher.max_queue = frames

    def renderer(self, kind: str) -> FaceRenderer:
        """The renderer of prepared faces of `kind` (sprite, photo, wav2lip), made on first use."""
        if kind not in self._renderers:
            if kind == "sprite":
                self._renderers[kind] = SpriteRenderer(self.device, kernel=self.sprite_kernel)
            elif kind == "photo":
                from models.lipsync.warp import WarpRenderer

                self._renderers[kind] = WarpRenderer(self.device)
            else:
                from models.lipsync.neural import Wav2LipRenderer

                assert self.neural is not None
                self._renderers[kind] = Wav2LipRenderer(self.device, self.neural.arch, self.neural.checkpoint)  # type: ignore[arg-type]
        return self._renderers[kind]

    def renderer_for_pack(self, pack: str) -> FaceRenderer:
        """Drawn packs render as sprites; photos with the network when one is configured, else warped;
        videos only with the network."""
        if pack == "sprite" or (pack == "photo" and self.neural is None):
            return self.renderer(pack)
        if self.neural is None:
            raise PackError(f"a {pack} pack needs a neural lip-sync model; fix: lipsync.model and lipsync.checkpoint")
        return self.renderer("wav2lip")

    async def prepare(
        self, pack_dir: Path, size: tuple[int, int], background: tuple[int, int, int] | None = None
    ) -> PreparedFace:
        """A pack ready for frames of `size`, over a flat `background` colour if given (LipSync.prepare)."""
        loop = asyncio.get_running_loop()
        face = await loop.run_in_executor(None, self.prepare_blocking, pack_dir, size)
        if background is not None:
            face = await loop.run_in_executor(None, self.with_background, face, background)
        return face

    def prepare_blocking(self, pack_dir: Path, size: tuple[int, int]) -> PreparedFace:
        """Load a pack for frames of `size` (blocking: run it in an executor).

        Channels showing the same pack at the same size share one prepared face (its tensors are
        only read), so a batch of them indexes one table instead of stacking a copy per channel
        (that stacking was 7-16 % of an 8-channel batch's render time on CPU). A pack prepared
        anew on disk (a newer pack.json) loads anew.
        """
        pack_dir = Path(pack_dir)
        manifest = pack_dir / "pack.json"
        key = (pack_dir.resolve(), (size[0], size[1]), manifest.stat().st_mtime_ns if manifest.is_file() else 0)
        with self._prepare_lock:
            if key not in self._faces:
                self._faces[key] = self.renderer_for_pack(pack_kind(pack_dir)).prepare(pack_dir, size)
            return self._faces[key]

    def with_background(self, face: PreparedFace, rgb: tuple[int, int, int]) -> PreparedFace:
        """The same drawn face over a flat colour (a chroma key background for OBS).

        Only drawn packs have a background apart from the character; a photo is one picture.
        """
        if not isinstance(face, SpriteFace):
            raise PackError("a chroma background needs a drawn (sprite) pack; a photo pack keeps its photo")
        keyed = face.over_flat(rgb)
        keyed.still = self.renderer(keyed.kind).render_rgb([keyed], neutral(1))[0]
        return keyed

    def frame_ring(self, face: PreparedFace, slots: int, name: str = "") -> FrameRing:
        """Host memory for `slots` I420 frames of `face`: page-locked when frames come from a GPU."""
        width, height = face.size
        memory = "pinned" if self.device.type == "cuda" else "heap"
        extra = 2 * getattr(face, "audio_window", 0)  # an audio-driven face's int16 window per frame
        return FrameRing((i420_rows(height), width), slots, memory=memory, name=name, extra_bytes=extra)

    def render_now(self, faces: list[PreparedFace], params: np.ndarray, **extras: Any) -> np.ndarray:
        """One blocking batched call -> uint8 I420 (B, H * 3 // 2, W) (benchmarks, offline tools);
        live channels use `render`. `extras`: frames=, audio= for audio-driven faces."""
        kinds = {(f.kind, f.size) for f in faces}
        if len(kinds) != 1:
            raise ValueError(f"one call renders one pack kind and size, got {sorted(kinds)}")
        width, height = faces[0].size
        out = np.empty((len(faces), i420_rows(height), width), np.uint8)
        self.renderer(faces[0].kind).render_i420(faces, params, list(out), **extras)
        return out

    def frame_cost_blocking(self, face: PreparedFace) -> float:
        """Seconds this renderer takes per frame of `face` at a typical batch, talking (blocking)."""
        params = neutral(COST_BATCH)
        calibration = getattr(self.renderer(face.kind), "calibration", None)
        extras = calibration(face, COST_BATCH) if calibration is not None else {}
        self.render_now([face] * COST_BATCH, params, **extras)  # warm: the first call pays one-off set-up
        times = []
        for _ in range(3):  # the fastest of three: what the work costs, not what a busy moment cost
            t0 = time.perf_counter()
            self.render_now([face] * COST_BATCH, params, **extras)
            times.append(time.perf_counter() - t0)
        return min(times) / COST_BATCH

    async def frame_cost(self, face: PreparedFace) -> float:
        return await asyncio.get_running_loop().run_in_executor(None, self.frame_cost_blocking, face)

    async def render(
        self,
        face: PreparedFace,
        params: np.ndarray,
        into: Sequence[np.ndarray],
        *,
        deadline: float | None = None,
        key: str = "",
        expires: float | None = None,
        frames: np.ndarray | None = None,
        audio: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Draw one channel's frames (params: (n, N_PARAMS)) into `into` (n I420 frames), batched with others.
        `frames`, `audio`: the frames' timeline numbers and (audio-driven faces) their audio windows.

        `deadline`: the loop time the first frame goes on air (None: as soon as possible); `key`:
        the channel, for fairness and per-channel counters; `expires`: when the last frame goes on
        air (after that they are of no use). Raises Overloaded when the queue is full, and Expired
        (an Overloaded) when the frames could no longer be ready in time and were not rendered.
        """
        if params.ndim != 2 or params.shape[1] != N_PARAMS or not len(params):
            raise ValueError(f"params must have shape (n >= 1, {N_PARAMS}), got {params.shape}")
        width, height = face.size
        if len(into) != len(params) or any(f.shape != (i420_rows(height), width) for f in into):
            raise ValueError(f"into must be {len(params)} I420 frames of {width}x{height}")
        try:
            future = self.batcher.submit(
                key or "unnamed",
                _RenderJob(face, params, into, frames, audio),
                cost=len(params),
                deadline=deadline,
                expires=expires,
            )
        except Overloaded:
            with self._stats_lock:
                self.stats["rejected"] += 1
            raise
        return await future

    def _render_batch(self, jobs: list[_RenderJob]) -> list[BaseException | None]:
        """The batch function (render thread): one tensor call per (pack kind, size); a failing call fails its jobs."""
        results: list[BaseException | None] = [RuntimeError("not rendered")] * len(jobs)
        groups: dict[tuple[str, tuple[int, int]], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.face.kind, job.face.size), []).append(i)
        for (kind, _), members in groups.items():
            faces = [jobs[i].face for i in members for _ in range(len(jobs[i].params))]
            params = np.concatenate([jobs[i].params for i in members]).astype(np.float32, copy=False)
            into = [frame for i in members for frame in jobs[i].into]
            extras = _extras([jobs[i] for i in members])
            t0 = time.perf_counter()
            try:
                self.renderer(kind).render_i420(faces, params, into, **extras)
            except Exception as exc:
                with self._stats_lock:
                    self.stats["errors"] += 1
                for i in members:
                    results[i] = exc
                continue
            with self._stats_lock:
                self.render_seconds += time.perf_counter() - t0
                self.stats["batches"] += 1
                self.stats["frames"] += len(params)
                self.batch_sizes[len(params)] += 1
            for i in members:
                results[i] = None
        return results

    def metrics(self) -> dict[str, Any]:
        """For /metrics: the batcher's numbers (jobs, queue, deadline misses, per channel) and the tensor calls."""
        with self._stats_lock:
            calls = {
                "calls": self.stats["batches"],
                "frames": self.stats["frames"],
                "errors": self.stats["errors"],
                "render_seconds": self.render_seconds,
                "call_sizes": dict(sorted(self.batch_sizes.items())),
            }
        return {**self.batcher.metrics(), "tensor": calls}

    def forget(self, key: str) -> None:
        self.batcher.forget(key)

    async def aclose(self) -> None:
        await self.batcher.aclose()


def _extras(jobs: list[_RenderJob]) -> dict[str, Any]:
    """The batch's frame numbers and audio windows, where its jobs have them (audio-driven faces)."""
    if all(job.frames is None and job.audio is None for job in jobs):
        return {}
    numbers = [job.frames if job.frames is not None else np.zeros(len(job.params), np.int64) for job in jobs]
    silence = np.zeros(1, np.int16)
    audio = [a for job in jobs for a in (job.audio if job.audio is not None else [silence] * len(job.params))]
    return {"frames": np.concatenate(numbers), "audio": audio}
