"""The shared lip-sync service: jobs from many channels rendered in one batched call, by deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from agents.worker.face_source import FaceSource
from models.avatars import resolve_pack
from models.lipsync.idle import IdleMotion
from models.lipsync.params import JAW, N_MOUTH
from models.lipsync.service import LipSyncService, Overloaded
from models.protocols import PreparedFace
from stream.clock import VideoFormat
from stream.frames import to_rgb
from stream.program import Program

SIZE = (256, 256)
I420 = (384, 256)  # rows, width of a 256x256 frame


async def render(service: LipSyncService, face: PreparedFace, params: np.ndarray, **kw) -> np.ndarray:  # type: ignore[no-untyped-def]
    """One channel's frames through the service, into frames leased from a ring, stacked."""
    frames = service.frame_ring(face, 8).lease(len(params))
    assert frames is not None
    await service.render(face, params, frames, **kw)
    return np.stack(frames)


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
    faces = [service.prepare_blocking(pack, SIZE) for _ in range(4)]  # four channels showing the same pack
    jobs = [poses(i, 2, jaw=0.2 * i) for i in range(4)]
    results = await asyncio.gather(*(render(service, f, p) for f, p in zip(faces, jobs, strict=True)))
    assert service.stats["batches"] == 1 and service.batch_sizes == {8: 1}, "4 jobs x 2 frames, one call"
    for face, params, frames in zip(faces, jobs, results, strict=True):
        assert frames.shape == (2, *I420)
        assert np.abs(frames.astype(int) - service.render_now([face] * 2, params).astype(int)).max() <= 1
    assert not np.array_equal(results[0], results[3]), "each channel gets its own frames"


async def test_sprite_and_photo_jobs_render_in_one_pass(service: LipSyncService, astronaut_pack) -> None:  # type: ignore[no-untyped-def]
    sprite = service.prepare_blocking(resolve_pack("builtin:nova"), SIZE)
    photo = service.prepare_blocking(astronaut_pack, SIZE)
    a, b = await asyncio.gather(render(service, sprite, poses(1, 3, 0.5)), render(service, photo, poses(2, 3, 0.5)))
    assert a.shape == b.shape == (3, *I420)
    assert service.stats["frames"] == 6 and service.batch_sizes == {3: 2}, "one call per pack kind"


async def test_full_queue_refuses_at_once(service: LipSyncService) -> None:
    service.max_queue_frames = 4
    face = service.prepare_blocking(resolve_pack("builtin:nova"), SIZE)
    first, second = await asyncio.gather(
        render(service, face, poses(0, 4, 0.0)), render(service, face, poses(0, 1, 0.0)), return_exceptions=True
    )
    assert first.shape[0] == 4
    assert isinstance(second, Overloaded) and "queue full" in str(second)


async def test_a_failing_render_fails_its_jobs_and_the_service_goes_on(
    service: LipSyncService, monkeypatch: pytest.MonkeyPatch
) -> None:
    face = service.prepare_blocking(resolve_pack("builtin:nova"), SIZE)
    renderer = service.renderer("sprite")
    real = renderer.render_i420
    monkeypatch.setattr(renderer, "render_i420", lambda *_: (_ for _ in ()).throw(RuntimeError("GPU fell over")))
    with pytest.raises(RuntimeError, match="GPU fell over"):
        await render(service, face, poses(0, 2, 0.0))
    monkeypatch.setattr(renderer, "render_i420", real)
    assert (await render(service, face, poses(0, 2, 0.0))).shape == (2, *I420)
    assert service.stats["errors"] == 1


async def test_bad_pose_shape_is_refused(service: LipSyncService) -> None:
    face = service.prepare_blocking(resolve_pack("builtin:nova"), SIZE)
    with pytest.raises(ValueError, match="shape"):
        await render(service, face, np.zeros((2, 3), np.float32))


def test_channels_showing_one_pack_share_its_prepared_face(service: LipSyncService) -> None:
    pack = resolve_pack("builtin:nova")
    face = service.prepare_blocking(pack, SIZE)
    assert service.prepare_blocking(pack, SIZE) is face, "prepared once, its tensors shared read-only"
    assert service.prepare_blocking(pack, (128, 128)) is not face and service.prepare_blocking(
        pack, (128, 128)
    ).size == (128, 128)


async def test_channels_with_different_faces_share_one_call_without_cross_talk(service: LipSyncService) -> None:
    nova = service.prepare_blocking(resolve_pack("builtin:nova"), SIZE)
    faces = {
        "ch-pack": nova,
        "ch-green": service.with_background(nova, (0, 177, 64)),
        "ch-blue": service.with_background(nova, (0, 71, 187)),
    }
    due = asyncio.get_running_loop().time() + 5.0
    jobs = {name: poses(i, 2, jaw=0.3 * i) for i, name in enumerate(faces)}
    results = await asyncio.gather(
        *(render(service, faces[name], jobs[name], deadline=due, key=name) for name in faces)
    )
    assert service.batch_sizes == {6: 1}, "three channels x 2 frames, one tensor call"
    for (name, face), frames in zip(faces.items(), results, strict=True):
        alone = service.render_now([face] * 2, jobs[name])
        assert np.abs(frames.astype(int) - alone.astype(int)).max() <= 1, f"{name} got another channel's frames"
    corners = [tuple(to_rgb(frames[0])[2, 2].astype(int)) for frames in results]
    for corner, key in zip(corners[1:], [(0, 177, 64), (0, 71, 187)], strict=True):
        assert np.abs(np.subtract(corner, key)).max() <= 3, f"a chroma background of {corner}, not {key}"
    assert corners[0] not in corners[1:]
    keys = service.metrics()["keys"]
    assert {name: keys[name]["items"] for name in faces} == dict.fromkeys(faces, 2)
    assert service.metrics()["deadline_misses"] == 0


async def test_batching_off_renders_every_job_alone() -> None:
    service = LipSyncService("cpu", batching=False)
    face = service.prepare_blocking(resolve_pack("builtin:nova"), SIZE)
    try:
        await asyncio.gather(*(render(service, face, poses(i, 2, 0.1), key=f"ch{i}") for i in range(3)))
        assert service.batch_sizes == {2: 3}, "one call per job"
    finally:
        await service.aclose()


class _ClockedSink:
    """Records when each frame reached the sink and when the Program said it was due."""

    def __init__(self, program_due: Callable[[int], float | None]) -> None:
        self.due = program_due
        self.aired: list[tuple[float, float | None]] = []

    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        pass

    def on_video(self, image: np.ndarray, frame: int) -> None:
        self.aired.append((asyncio.get_running_loop().time(), self.due(frame)))

    async def ready(self) -> None:
        pass


async def test_a_channels_frames_are_keyed_and_due_when_they_air(service: LipSyncService) -> None:
    face = service.prepare_blocking(resolve_pack("builtin:nova"), SIZE)
    source = FaceSource(face, service, IdleMotion(1, 25))
    sink = _ClockedSink(lambda frame: None)
    program = Program(VideoFormat(*SIZE, 25), source, sink, cue_dims=N_MOUTH, name="ch-a")
    sink.due = program.due
    assert program.due(0) is None, "before it runs live, a frame is wanted as soon as possible"
    await program.run(until=0.4)
    assert len(sink.aired) == 10
    assert all(due is not None and abs(at - due) < 0.1 for at, due in sink.aired), sink.aired
    assert service.metrics()["keys"]["ch-a"]["completed"] >= 10, "the channel's name keys its renders"
