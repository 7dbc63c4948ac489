"""The shared lip-sync service: jobs from many channels rendered in one batched call."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models.avatars import resolve_pack
from models.lipsync.idle import IdleMotion
from models.lipsync.params import JAW
from models.lipsync.service import LipSyncService, Overloaded

SIZE = (256, 256)


@pytest.fixture()
async def service():
    svc = LipSyncService("cpu", max_batch=32)
    yield svc
    await svc.aclose()


def poses(seed: int, n: int, jaw: float) -> np.ndarray:
    p = IdleMotion(seed, 25).params(0, n)
    p[:, JAW] = jaw
    return p


async def test_jobs_of_several_channels_share_one_call(service: LipSyncService) -> None:
    pack = resolve_pack("builtin:nova")
    faces = [service.prepare(pack, SIZE) for _ in range(4)]  # four channels with their own prepared face
    jobs = [poses(i, 2, jaw=0.2 * i) for i in range(4)]
    results = await asyncio.gather(*(service.render(f, p) for f, p in zip(faces, jobs, strict=True)))
    assert service.stats["batches"] == 1 and service.batch_sizes == {8: 1}, "4 jobs x 2 frames, one call"
    for face, params, frames in zip(faces, jobs, results, strict=True):
        assert frames.shape == (2, 256, 256, 3)
        assert np.abs(frames.astype(int) - service.render_now([face] * 2, params).astype(int)).max() <= 1
    assert not np.array_equal(results[0], results[3]), "each channel gets its own frames"


async def test_sprite_and_photo_jobs_render_in_one_pass(service: LipSyncService, astronaut_pack) -> None:  # type: ignore[no-untyped-def]
    sprite = service.prepare(resolve_pack("builtin:nova"), SIZE)
    photo = service.prepare(astronaut_pack, SIZE)
    a, b = await asyncio.gather(service.render(sprite, poses(1, 3, 0.5)), service.render(photo, poses(2, 3, 0.5)))
    assert a.shape == b.shape == (3, 256, 256, 3)
    assert service.stats["frames"] == 6 and service.batch_sizes == {3: 2}, "one call per pack kind"


async def test_full_queue_refuses_at_once(service: LipSyncService) -> None:
    service.max_queue_frames = 4
    face = service.prepare(resolve_pack("builtin:nova"), SIZE)
    first, second = await asyncio.gather(
        service.render(face, poses(0, 4, 0.0)), service.render(face, poses(0, 1, 0.0)), return_exceptions=True
    )
    assert first.shape[0] == 4
    assert isinstance(second, Overloaded) and "queue full" in str(second)


async def test_a_failing_render_fails_its_jobs_and_the_service_goes_on(
    service: LipSyncService, monkeypatch: pytest.MonkeyPatch
) -> None:
    face = service.prepare(resolve_pack("builtin:nova"), SIZE)
    renderer = service.renderer("sprite")
    real = renderer.render
    monkeypatch.setattr(renderer, "render", lambda faces, params: (_ for _ in ()).throw(RuntimeError("GPU fell over")))
    with pytest.raises(RuntimeError, match="GPU fell over"):
        await service.render(face, poses(0, 2, 0.0))
    monkeypatch.setattr(renderer, "render", real)
    assert (await service.render(face, poses(0, 2, 0.0))).shape == (2, 256, 256, 3)
    assert service.stats["errors"] == 1


async def test_bad_pose_shape_is_refused(service: LipSyncService) -> None:
    face = service.prepare(resolve_pack("builtin:nova"), SIZE)
    with pytest.raises(ValueError, match="shape"):
        await service.render(face, np.zeros((2, 3), np.float32))
