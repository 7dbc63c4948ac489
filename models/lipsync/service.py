"""The process's one lip-sync service: render jobs from every channel, batched.

Channels ask for a few frames at a time; whatever jobs wait when the render thread becomes
free are rendered together, one tensor call per (pack kind, frame size). With N talking
channels that is one batched call instead of N small ones — the thing peers do not do
(notes/anchors.md). The queue is bounded: when it holds `max_queue_frames`, a new job fails at
once with Overloaded and the channel shows its previous frame instead of waiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.avatars import PackError, pack_kind
from models.devices import resolve_device
from models.lipsync.base import FaceRenderer, PreparedFace
from models.lipsync.params import N_PARAMS, neutral

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The render queue is full; the caller should reuse its last frame."""


@dataclass(slots=True)
class _Job:
    face: PreparedFace
    params: np.ndarray
    future: asyncio.Future[np.ndarray]


def _make_renderer(kind: str, device: torch.device) -> FaceRenderer:
    if kind == "sprite":
        from models.lipsync.sprite import SpriteRenderer

        return SpriteRenderer(device)
    from models.lipsync.warp import WarpRenderer

    return WarpRenderer(device)


class LipSyncService:
    def __init__(self, device: str = "auto", *, max_batch: int = 32, max_queue_frames: int = 512) -> None:
        self.device = resolve_device(device)
        self.max_batch = max_batch
        self.max_queue_frames = max_queue_frames
        self._renderers: dict[str, FaceRenderer] = {}
        self._queue: deque[_Job] = deque()
        self._queued_frames = 0
        self._wakeup = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lipsync")
        self._worker: asyncio.Task[None] | None = None
        self.stats: Counter[str] = Counter()
        self.batch_sizes: Counter[int] = Counter()
        self.render_seconds = 0.0

    def renderer(self, kind: str) -> FaceRenderer:
        if kind not in self._renderers:
            self._renderers[kind] = _make_renderer(kind, self.device)
        return self._renderers[kind]

    def prepare(self, pack_dir: Path, size: tuple[int, int]) -> PreparedFace:
        """Load a pack for frames of `size` (blocking: run it in an executor)."""
        return self.renderer(pack_kind(pack_dir)).prepare(pack_dir, size)

    def with_background(self, face: PreparedFace, rgb: tuple[int, int, int]) -> PreparedFace:
        """The same drawn face over a flat colour (a chroma key background for OBS).

        Only drawn packs have a background apart from the character; a photo is one picture.
        """
        background = getattr(face, "background", None)
        if not isinstance(background, torch.Tensor):
            raise PackError("a chroma background needs a drawn (sprite) pack; a photo pack keeps its photo")
        flat = torch.tensor(rgb, dtype=background.dtype, device=background.device).expand_as(background)
        keyed = dataclasses.replace(face, background=flat.contiguous())  # type: ignore[type-var]
        keyed.still = self.render_now([keyed], neutral(1))[0]
        return keyed

    def render_now(self, faces: list[PreparedFace], params: np.ndarray) -> np.ndarray:
        """One blocking batched call (benchmarks, offline tools); live channels use `render`."""
        kinds = {(f.kind, f.size) for f in faces}
        if len(kinds) != 1:
            raise ValueError(f"one call renders one pack kind and size, got {sorted(kinds)}")
        return self.renderer(faces[0].kind).render(faces, params)

    async def render(self, face: PreparedFace, params: np.ndarray) -> np.ndarray:
        """Frames for one channel (params: (n, N_PARAMS)) -> uint8 (n, H, W, 3), batched with others."""
        if params.ndim != 2 or params.shape[1] != N_PARAMS:
            raise ValueError(f"params must have shape (n, {N_PARAMS}), got {params.shape}")
        if self._queued_frames + len(params) > self.max_queue_frames:
            self.stats["rejected"] += 1
            raise Overloaded(f"lip-sync queue full ({self._queued_frames} frames waiting)")
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="lipsync-batcher")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(face, params, future))
        self._queued_frames += len(params)
        self._wakeup.set()
        return await future

    def _take_batch(self) -> list[_Job]:
        jobs: list[_Job] = []
        frames = 0
        while self._queue and (not jobs or frames + len(self._queue[0].params) <= self.max_batch):
            job = self._queue.popleft()
            self._queued_frames -= len(job.params)
            if job.future.done():  # the channel gave up (cancelled)
                continue
            jobs.append(job)
            frames += len(job.params)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            groups: dict[tuple[str, tuple[int, int]], list[_Job]] = {}
            for job in self._take_batch():
                groups.setdefault((job.face.kind, job.face.size), []).append(job)
            for (kind, _), jobs in groups.items():
                faces = [job.face for job in jobs for _ in range(len(job.params))]
                params = np.concatenate([job.params for job in jobs]).astype(np.float32, copy=False)
                t0 = time.perf_counter()
                try:
                    frames = await loop.run_in_executor(self._pool, self.renderer(kind).render, faces, params)
                except Exception as exc:
                    self.stats["errors"] += 1
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self.render_seconds += time.perf_counter() - t0
                self.stats["batches"] += 1
                self.stats["frames"] += len(params)
                self.batch_sizes[len(params)] += 1
                start = 0
                for job in jobs:
                    end = start + len(job.params)
                    if not job.future.done():
                        job.future.set_result(frames[start:end])
                    start = end

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for job in self._queue:
            if not job.future.done():
                job.future.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True)
