"""The drawn default avatar: real rasterising and rendering of the built-in pack, no mocks.

Checks what a viewer would notice: the mouth opens into a dark cavity, eyes blink, the head moves
while the background stays put, every viseme has its own drawing, and batching changes nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.avatars import PackError, resolve_pack
from models.lipsync.params import BLINK, BREATH, HEAD_DX, JAW, MOUTH, N_PARAMS, neutral
from models.lipsync.sprite import SpriteFace, SpriteRenderer
from models.lipsync.visemes import VISEME_SHAPES, Viseme

SIZE = (512, 512)


@pytest.fixture(scope="module")
def renderer() -> SpriteRenderer:
    return SpriteRenderer("cpu")


@pytest.fixture(scope="module")
def nova(renderer: SpriteRenderer) -> SpriteFace:
    return renderer.prepare(resolve_pack("builtin:nova"), SIZE)


def crop(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return frame[y0:y1, x0:x1].astype(np.float32)


def posed(**columns: float) -> np.ndarray:
    p = neutral(1)
    names = {"jaw": JAW, "blink": BLINK, "head_dx": HEAD_DX, "breath": BREATH}
    for name, value in columns.items():
        p[0, names[name]] = value
    return p


def random_poses(n: int, seed: int) -> np.ndarray:
    """n poses with every column moving: mouth and blink, sway beyond idle's, any breath."""
    rng = np.random.default_rng(seed)
    params = np.zeros((n, N_PARAMS), np.float32)
    params[:, :4] = rng.uniform(0, 1, (n, 4))
    params[:, 4:6] = rng.uniform(-0.02, 0.02, (n, 2))
    params[:, 6] = rng.uniform(-0.05, 0.05, n)
    params[:, 7] = rng.uniform(-1, 1, n)
    return params


def copy_pack(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(resolve_pack("builtin:nova"), dst)
    return dst


def edit_manifest(pack: Path, **changes: object) -> None:
    manifest = json.loads((pack / "pack.json").read_text())
    manifest.update(changes)
    (pack / "pack.json").write_text(json.dumps(manifest))


def test_builtin_pack_prepares_at_512_and_256(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    small = renderer.prepare(resolve_pack("builtin:nova"), (256, 256))
    for face, (w, h) in ((nova, SIZE), (small, (256, 256))):
        assert face.kind == "sprite" and face.size == (w, h)
        assert face.still.shape == (h, w, 3) and face.still.dtype == np.uint8
        x0, y0, x1, y1 = face.mouth_box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # the same art, scaled: the small box is the big one halved (give or take the rounding outwards)
    assert np.abs(np.array(small.mouth_box) * 2 - np.array(nova.mouth_box)).max() <= 2
    # a drawn character, not a blank frame: many colours
    assert len(np.unique(nova.still.reshape(-1, 3), axis=0)) > 200


def test_non_square_frames_fill_the_whole_frame(renderer: SpriteRenderer) -> None:
    wide = renderer.prepare(resolve_pack("builtin:nova"), (320, 180))
    assert wide.still.shape == (180, 320, 3)
    frame = renderer.render_rgb([wide], posed(jaw=0.9))[0].astype(int)
    edges = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    assert (edges.sum(axis=1) > 300).all(), "the light backdrop and the hoodie reach every edge"


def test_neutral_frame_is_the_still(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    frame = renderer.render_rgb([nova], neutral(1))
    assert frame.shape == (1, 512, 512, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[0], nova.still)


def test_jaw_changes_the_mouth_and_nothing_outside_it(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    closed, opened = renderer.render_rgb([nova, nova], np.concatenate([posed(jaw=0.0), posed(jaw=0.9)]))
    assert np.abs(crop(opened, nova.mouth_box) - crop(closed, nova.mouth_box)).mean() > 25
    changed = np.abs(opened.astype(int) - closed.astype(int)).max(axis=2) > 0
    x0, y0, x1, y1 = nova.mouth_box
    outside = changed.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any(), "only the mouth box may change when only the jaw moves"


def test_open_mouth_shows_a_dark_cavity(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    closed, opened = renderer.render_rgb([nova, nova], np.concatenate([posed(jaw=0.0), posed(jaw=0.9)]))
    x0, y0, x1, y1 = nova.mouth_box
    cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, (y1 - y0) // 8
    middle = (cx - r, cy - r, cx + r, cy + r)
    assert crop(opened, middle).mean() < 0.5 * crop(closed, middle).mean()  # skin -> cavity


def test_blink_changes_the_eyes_only(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    frames = renderer.render_rgb([nova] * 3, np.concatenate([posed(blink=b) for b in (0.0, 0.5, 1.0)]))
    eyes = [crop(f, nova.eyes_box) for f in frames]
    assert np.abs(eyes[2] - eyes[0]).mean() > 10
    assert 2 < np.abs(eyes[1] - eyes[0]).mean() < np.abs(eyes[2] - eyes[0]).mean()
    np.testing.assert_array_equal(crop(frames[2], nova.mouth_box), crop(frames[0], nova.mouth_box))
    # open eyes show the dark iris and pupil, closed ones mostly skin
    assert eyes[0].mean() < eyes[2].mean()


def test_every_viseme_has_its_own_mouth(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    params = neutral(len(Viseme))
    for v in Viseme:
        params[v, MOUTH] = VISEME_SHAPES[v]
    mouths = [crop(f, nova.mouth_box) for f in renderer.render_rgb([nova] * len(Viseme), params)]
    for i in range(len(mouths)):
        for j in range(i):
            diff = np.abs(mouths[i] - mouths[j]).mean()
            assert diff > 1.5, f"{Viseme(i).name} and {Viseme(j).name} look alike ({diff:.2f})"


def test_a_batch_renders_what_one_by_one_does(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    params = random_poses(12, seed=7)
    batch = renderer.render_rgb([nova] * 12, params)
    for i in range(12):
        single = renderer.render_rgb([nova], params[i : i + 1])[0]
        assert np.abs(batch[i].astype(int) - single.astype(int)).max() <= 1


def test_head_dx_moves_the_face_sideways(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    shift = 10
    moved = renderer.render_rgb([nova], posed(head_dx=shift / SIZE[0]))[0]
    x0, y0, x1, y1 = nova.eyes_box
    before = crop(nova.still, nova.eyes_box)
    after = crop(moved, (x0 + shift, y0, x1 + shift, y1))
    assert np.abs(after - before).mean() < 1.0  # the eyes are now 10 px further right...
    assert np.abs(crop(moved, nova.eyes_box) - before).mean() > 10  # ...and no longer where they were
    np.testing.assert_array_equal(moved[:40], nova.still[:40])  # the background above the head stays


def test_breath_raises_the_body(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    risen = renderer.render_rgb([nova], posed(breath=1.0))[0]
    rise = 3  # pack.json breath_px at 512
    still, risen = nova.still.astype(int), risen.astype(int)
    # rows 470..500 show the hoodie, well below the head
    np.testing.assert_allclose(risen[470 - rise : 500 - rise], still[470:500], atol=1)
    assert np.abs(risen[470:500] - still[470:500]).max() > 20


def test_different_faces_and_packs_share_a_batch(renderer: SpriteRenderer, nova: SpriteFace, tmp_path: Path) -> None:
    recoloured = copy_pack(tmp_path, "recoloured")
    svg = recoloured / "background.svg"
    svg.write_text(svg.read_text().replace("#D9D3FA", "#A0F0C0"))
    moved = copy_pack(tmp_path, "moved")  # another layout: a larger mouth box
    edit_manifest(moved, mouth_box=[190, 300, 322, 380])
    faces = [nova, renderer.prepare(recoloured, SIZE), renderer.prepare(moved, SIZE)]
    assert faces[2].mouth_box != nova.mouth_box
    params = np.concatenate([posed(jaw=0.9), posed(blink=1.0), posed(jaw=0.5), posed(jaw=0.2)])
    order = [0, 1, 2, 1]
    batch = renderer.render_rgb([faces[i] for i in order], params)
    for k, i in enumerate(order):
        single = renderer.render_rgb([faces[i]], params[k : k + 1])[0]
        assert np.abs(batch[k].astype(int) - single.astype(int)).max() <= 1
    assert np.abs(batch[1][:20].astype(int) - batch[0][:20].astype(int)).mean() > 20  # its own background


def test_bad_params_are_refused_clearly(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    with pytest.raises(ValueError, match=r"params must be float32 \(2, 8\)"):
        renderer.render_rgb([nova, nova], np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"params must be"):
        renderer.render_rgb([nova], np.zeros((2, N_PARAMS), np.float32))
    nan = neutral(1)
    nan[0, JAW] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        renderer.render_rgb([nova], nan)
    small = renderer.prepare(resolve_pack("builtin:nova"), (64, 64))
    with pytest.raises(ValueError, match="differ in size"):
        renderer.render_rgb([nova, small], neutral(2))
    with pytest.raises(ValueError, match="not prepared by a SpriteRenderer"):
        renderer.render_rgb([object()], neutral(1))  # type: ignore[list-item]


def test_broken_packs_name_what_is_wrong(renderer: SpriteRenderer, tmp_path: Path) -> None:
    missing = copy_pack(tmp_path, "missing")
    (missing / "mouth_aa.svg").unlink()
    with pytest.raises(PackError, match=r"mouth_aa\.svg"):
        renderer.prepare(missing, SIZE)

    bad_svg = copy_pack(tmp_path, "bad_svg")
    (bad_svg / "eyes_half.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 512 512'>")
    with pytest.raises(PackError, match=r"eyes_half\.svg"):
        renderer.prepare(bad_svg, SIZE)

    bad_json = copy_pack(tmp_path, "bad_json")
    (bad_json / "pack.json").write_text("{not json")
    with pytest.raises(PackError, match=r"pack\.json"):
        renderer.prepare(bad_json, SIZE)

    no_mouth = copy_pack(tmp_path, "no_mouth")
    manifest = json.loads((no_mouth / "pack.json").read_text())
    del manifest["layers"]["mouths"]["oo"]
    (no_mouth / "pack.json").write_text(json.dumps(manifest))
    with pytest.raises(PackError, match=r"layers\.mouths\.oo"):
        renderer.prepare(no_mouth, SIZE)

    photo = copy_pack(tmp_path, "photo")
    edit_manifest(photo, kind="photo")
    with pytest.raises(PackError, match="'sprite' packs"):
        renderer.prepare(photo, SIZE)

    tight = copy_pack(tmp_path, "tight")
    edit_manifest(tight, mouth_box=[240, 320, 272, 350])
    with pytest.raises(PackError, match="draws outside mouth_box"):
        renderer.prepare(tight, SIZE)


def test_the_cpu_kernel_draws_what_the_batched_tensor_kernel_draws(renderer: SpriteRenderer, nova: SpriteFace) -> None:
    """The OpenCV kernel renders on CPUs, the torch one on GPUs: the same poses, the same picture."""
    tensor_kernel = SpriteRenderer("cpu", kernel="torch")
    assert renderer.kernel == "opencv" and tensor_kernel.kernel == "torch"
    params = random_poses(16, seed=11)
    drawn = renderer.render_rgb([nova] * 16, params).astype(int)
    batched = tensor_kernel.render_rgb([nova] * 16, params).astype(int)
    gap = np.abs(drawn - batched)
    assert gap.mean() < 0.1, f"mean gap {gap.mean():.3f}"
    assert (gap > 8).mean() < 1e-3, "only a few edge pixels may differ by the kernels' rounding"
    assert np.abs(drawn[1:] - drawn[:-1]).mean() > 1, "the poses differ, so must the frames"


def test_an_unknown_kernel_or_the_cpu_kernel_off_the_cpu_is_refused() -> None:
    with pytest.raises(ValueError, match="kernel must be one of auto, torch, opencv"):
        SpriteRenderer("cpu", kernel="fast")
    with pytest.raises(ValueError, match="opencv kernel renders on the CPU"):
        SpriteRenderer("meta", kernel="opencv")
