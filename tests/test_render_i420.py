"""The render path in the encoder's format: I420 made by the renderer, in leased, reused memory."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from models.avatars import resolve_pack
from models.frame_ring import FrameRing, MappedRing
from models.lipsync.i420 import i420_rows
from models.lipsync.idle import IdleMotion
from models.lipsync.params import JAW, ROUND, WIDTH
from models.lipsync.sprite import SpriteRenderer
from models.lipsync.warp import WarpRenderer
from stream.frames import to_i420

SIZE = (256, 256)


def talking(n: int, seed: int) -> np.ndarray:
    params = IdleMotion(seed, 25).params(0, n)
    rng = np.random.default_rng(seed)
    params[:, JAW], params[:, WIDTH], params[:, ROUND] = rng.uniform(0, 1, (3, n))
    return params


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def planes(frame: np.ndarray) -> dict[str, np.ndarray]:
    height = frame.shape[0] * 2 // 3
    flat = frame.reshape(-1)
    luma = height * frame.shape[1]
    return {"Y": flat[:luma], "U": flat[luma : luma * 5 // 4], "V": flat[luma * 5 // 4 :]}


@pytest.mark.parametrize("kind", ["sprite-opencv", "sprite-torch", "photo"])
def test_the_i420_path_matches_the_rgb_picture(kind: str, astronaut_pack) -> None:  # type: ignore[no-untyped-def]
    """Every kernel's I420 frames against its RGB picture converted as the encoder used to: >= 40 dB a plane."""
    if kind == "photo":
        renderer: SpriteRenderer | WarpRenderer = WarpRenderer("cpu")
        face = renderer.prepare(astronaut_pack, SIZE)
    else:
        renderer = SpriteRenderer("cpu", kernel=kind.split("-")[1])
        face = renderer.prepare(resolve_pack("builtin:nova"), SIZE)
    params = talking(6, seed=3)
    into = [np.empty((i420_rows(SIZE[1]), SIZE[0]), np.uint8) for _ in range(6)]
    renderer.render_i420([face] * 6, params, into)
    for rgb, frame in zip(renderer.render_rgb([face] * 6, params), into, strict=True):
        reference = planes(to_i420(rgb))
        for name, plane in planes(frame).items():
            assert psnr(plane, reference[name]) >= 40, f"{kind}: plane {name} at {psnr(plane, reference[name]):.1f} dB"


def test_a_frame_slot_comes_back_only_when_nobody_holds_the_frame() -> None:
    ring = FrameRing((6, 4), 3)
    frames = ring.lease(2)
    assert frames is not None and ring.free == 1
    assert ring.lease(2) is None and ring.free == 1, "a lease that does not fit takes nothing"
    kept = frames[1][2:4]  # a view, as the Program's last picture or a caption copy's source might hold
    del frames
    gc.collect()
    assert ring.free == 2, "the first frame is back; the second is still viewed"
    del kept
    gc.collect()
    assert ring.free == 3


def test_a_shared_ring_is_written_by_another_mapping_and_leaves_no_file() -> None:
    before = set(os.listdir("/dev/shm"))
    ring = FrameRing((6, 4), 4, memory="shared", name="test")
    assert ring.fd is not None
    other = MappedRing(os.dup(ring.fd), (6, 4), 4)  # what the GPU service process maps
    frames = ring.lease(2)
    assert frames is not None
    slot = ring.slot_of(frames[1])
    other.view(slot)[:] = 7
    assert (frames[1] == 7).all() and not (frames[0] == 7).all()
    del frames
    other.close()
    ring.close()
    assert set(os.listdir("/dev/shm")) == before, "a memfd ring has no name in /dev/shm"


def test_rendering_a_prepared_photo_pack_does_not_load_the_face_detector() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, models.lipsync.warp, models.lipsync.neural; print(sorted(m for m in sys.modules if 'litert' in m))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"LiteRT loaded just to render: {out}"
