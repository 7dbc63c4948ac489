"""The photo warp renderer on the astronaut pack: jaw, inner mouth, blinks, batches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.faces import PhotoPack
from models.lipsync.params import BLINK, HEAD_DX, JAW, N_PARAMS, ROUND, WIDTH
from models.lipsync.warp import WarpRenderer


@pytest.fixture(scope="module")
def renderer() -> WarpRenderer:
    return WarpRenderer("cpu")


@pytest.fixture(scope="module")
def face(renderer: WarpRenderer, astronaut_pack: Path):  # type: ignore[no-untyped-def]
    return renderer.prepare(astronaut_pack, (512, 512))


def pose(**values: float) -> np.ndarray:
    p = np.zeros((1, N_PARAMS), np.float32)
    for name, value in values.items():
        p[0, {"jaw": JAW, "width": WIDTH, "round": ROUND, "blink": BLINK, "head_dx": HEAD_DX}[name]] = value
    return p


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1].astype(np.float32)


def eyes_box(pack_dir: Path) -> tuple[int, int, int, int]:
    pack = PhotoPack.load(pack_dir)
    pts = np.concatenate([pack.regions["right_eye"], pack.regions["left_eye"]])
    x0, y0 = pts.min(0) - 6
    x1, y1 = pts.max(0) + 6
    return int(x0), int(y0), int(x1), int(y1)


def test_jaw_opens_an_inner_mouth_and_leaves_the_background(renderer: WarpRenderer, face) -> None:  # type: ignore[no-untyped-def]
    closed, opened = renderer.render_rgb([face, face], np.concatenate([pose(jaw=0.0), pose(jaw=1.0)]))
    mouth_closed, mouth_open = crop(closed, face.mouth_box), crop(opened, face.mouth_box)
    assert np.abs(mouth_open - mouth_closed).mean() > 10
    dark = lambda m: (m.mean(-1) < 60).sum()  # noqa: E731
    assert dark(mouth_open) > dark(mouth_closed) + 300, "the open mouth shows a dark cavity"
    assert np.array_equal(closed[:60, :60], opened[:60, :60]), "the background does not move"


def test_jaw_zero_closes_the_photos_parted_lips(face, astronaut_pack: Path) -> None:  # type: ignore[no-untyped-def]
    pack = PhotoPack.load(astronaut_pack)
    inner = pack.regions["lips_inner"].astype(np.int32)
    mask = np.zeros(pack.image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [inner], 1)

    def teeth(img: np.ndarray) -> int:  # bright, unsaturated pixels between the lips (lips are pink)
        rgb = img.astype(int)
        white = (rgb.min(-1) > 170) & (rgb.max(-1) - rgb.min(-1) < 45)
        return int((white & (mask > 0)).sum())

    assert teeth(pack.image) > 30, "the astronaut smiles with her teeth showing"
    assert teeth(face.still) < teeth(pack.image) / 4, "at rest the lips are closed over them"


def test_blink_closes_the_eyes_and_not_the_mouth(renderer: WarpRenderer, face, astronaut_pack: Path) -> None:  # type: ignore[no-untyped-def]
    open_, shut = renderer.render_rgb([face, face], np.concatenate([pose(), pose(blink=1.0)]))
    box = eyes_box(astronaut_pack)
    assert np.abs(crop(shut, box) - crop(open_, box)).mean() > 5
    assert np.array_equal(crop(shut, face.mouth_box), crop(open_, face.mouth_box))


def test_width_and_round_reshape_the_lips(renderer: WarpRenderer, face) -> None:  # type: ignore[no-untyped-def]
    rest, wide, rounded = renderer.render_rgb([face] * 3, np.concatenate([pose(), pose(width=1.0), pose(round=1.0)]))
    assert np.abs(crop(wide, face.mouth_box) - crop(rest, face.mouth_box)).mean() > 2
    assert np.abs(crop(rounded, face.mouth_box) - crop(rest, face.mouth_box)).mean() > 2
    assert np.abs(crop(rounded, face.mouth_box) - crop(wide, face.mouth_box)).mean() > 2


def test_a_batch_of_two_photos_renders_like_one_by_one(
    renderer: WarpRenderer, astronaut_pack: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for f in astronaut_pack.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    image = cv2.imread(str(other / "image.png"))
    cv2.imwrite(str(other / "image.png"), (image * [0.6, 0.9, 1.2]).clip(0, 255).astype(np.uint8))  # a recoloured copy
    a, b = renderer.prepare(astronaut_pack, (256, 256)), renderer.prepare(other, (256, 256))
    params = np.concatenate([pose(jaw=0.8), pose(blink=1.0), pose(jaw=0.3, head_dx=0.01), pose(round=1.0)])
    faces = [a, b, b, a]
    batch = renderer.render_rgb(faces, params)
    for i, f in enumerate(faces):
        single = renderer.render_rgb([f], params[i : i + 1])[0]
        assert np.abs(batch[i].astype(int) - single.astype(int)).max() <= 1
    assert np.abs(batch[1].astype(int) - batch[3].astype(int)).mean() > 5, "each frame comes from its own photo"


def test_bad_input_is_refused(renderer: WarpRenderer, face, astronaut_pack: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="row per face"):
        renderer.render_rgb([face], np.zeros((2, N_PARAMS), np.float32))
    small = renderer.prepare(astronaut_pack, (256, 256))
    with pytest.raises(ValueError, match="one frame size"):
        renderer.render_rgb([face, small], np.zeros((2, N_PARAMS), np.float32))
