"""`avatarcast avatar prepare PHOTO -o DIR`: a user's photo cropped around the one face in it.

It writes DIR/pack.json, DIR/image.png (the face picture the lip-sync renderer warps) and
DIR/preview.png (the same with landmarks and regions drawn, for the user to check). Landmarks are
found again on the final crop, at the resolution the renderer uses, so the mouth and eye polygons
sit on the pixels it will move.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from models.faces.landmarks import Face, FaceLandmarker
from models.faces.mesh import FACE_OVAL, FACE_SIDES, LEFT_EYE, LIPS_OUTER, RIGHT_EYE
from models.faces.photo_io import PhotoError, read_photo
from models.faces.photo_pack import IMAGE_FILE, PACK_VERSION, PREVIEW_FILE, REGIONS, PhotoPack

__all__ = ["PhotoError", "prepare_photo_pack"]

# Beyond this tilt of the eyes-to-mouth line the face is sideways; the detector's orientation
# comparison (below) tips over at about the same angle.
MAX_TILT_DEG = 60.0
# Where the nose tip falls between the two sides of the face (0..1, 0.5 when looking straight at
# the camera); beyond these bounds (about 45 degrees) the far cheek and lip corner are hidden and
# there is nothing for the renderer to move.
NOSE_POSITION = (0.15, 0.85)
NOSE_TIP = 1
# Enlarging the crop more than this makes the avatar visibly soft: worth a note.
MAX_UPSCALE = 2.0
# Landmarks found again on the crop are trusted when they lie this close (mean, in face widths)
# to the photo's landmarks carried over to the crop.
REDETECT_TOLERANCE = 0.1


def _face_width(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[FACE_SIDES[1], :2] - landmarks[FACE_SIDES[0], :2]))


def _cut(photo: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """photo[y0:y0+height, x0:x0+width], edges replicated where the box leaves the photo."""
    h, w = photo.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + width, w), min(y0 + height, h)
    return cv2.copyMakeBorder(
        photo[sy0:sy1, sx0:sx1], sy0 - y0, y0 + height - sy1, sx0 - x0, x0 + width - sx1, cv2.BORDER_REPLICATE
    )


def _redetect(landmarker: FaceLandmarker, image: np.ndarray, expected: np.ndarray) -> Face | None:
    """The face found again in the crop, if it is the same face as `expected` (crop pixels)."""
    faces = landmarker.detect(image)
    if not faces:
        return None
    shift = [float(np.linalg.norm(f.landmarks[:, :2] - expected[:, :2], axis=1).mean()) for f in faces]
    best = int(np.argmin(shift))
    return faces[best] if shift[best] < REDETECT_TOLERANCE * _face_width(expected) else None


def _check_pose(
    name: str,
    landmarker: FaceLandmarker,
    image: np.ndarray,
    landmarks: np.ndarray,
    score: float,
) -> None:
    """Refuse faces that are not upright or are turned away: the mesh fits them badly.

    Sideways faces get good landmarks, so the eyes-to-mouth direction shows them. Upside-down
    faces get a confident mesh drawn the right way up over the wrong features (eyes above the
    mouth, 50 px off), which only the detector gives away: it scores the picture turned the right
    way up higher than as given (`score`: the face's detection score in `image`, 0 if none).
    Orientation is checked first because a misfitted mesh also fails the profile check.
    """
    upright = f"the face in {name} looks upside down or sideways; rotate the photo upright and try again"
    eyes = (landmarks[list(RIGHT_EYE), :2].mean(0) + landmarks[list(LEFT_EYE), :2].mean(0)) / 2
    dx, dy = landmarks[list(LIPS_OUTER), :2].mean(0) - eyes
    if abs(math.degrees(math.atan2(dx, dy))) > MAX_TILT_DEG:
        raise PhotoError(upright)
    turned = landmarker.detect(np.ascontiguousarray(image[::-1, ::-1]))
    if turned and turned[0].score > score:
        raise PhotoError(upright)
    right, left = landmarks[FACE_SIDES[0], :2], landmarks[FACE_SIDES[1], :2]
    across = left - right
    nose = float(np.dot(landmarks[NOSE_TIP, :2] - right, across) / np.dot(across, across))
    if not NOSE_POSITION[0] <= nose <= NOSE_POSITION[1]:
        raise PhotoError(
            f"the face in {name} is turned away from the camera; use a photo where it looks straight at it"
        )


def _write_pack(out_dir: Path, source: str, image: np.ndarray, face: Face, crop: tuple[float, ...]) -> dict:
    rounded = np.round(face.landmarks.astype(np.float64), 2)
    manifest = {
        "format": "avatarcast-pack",
        "kind": "photo",
        "version": PACK_VERSION,
        "image": IMAGE_FILE,
        "size": [image.shape[1], image.shape[0]],
        "source": source,
        "crop": [round(v, 2) for v in crop],
        "detection_score": round(face.score, 4),
        "landmarks": rounded.tolist(),
        "regions": {name: rounded[list(indices), :2].tolist() for name, indices in REGIONS.items()},
    }
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    (out_dir / IMAGE_FILE).write_bytes(cv2.imencode(".png", bgr)[1].tobytes())
    (out_dir / PREVIEW_FILE).write_bytes(cv2.imencode(".png", _preview(bgr, face.landmarks))[1].tobytes())
    # pack.json last and by rename: a pack that has one is complete.
    part = out_dir / "pack.json.part"
    part.write_text(json.dumps(manifest, separators=(",", ":")))
    os.replace(part, out_dir / "pack.json")
    return manifest


def _preview(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The pack image with every landmark (white) and the regions: lips red, eyes green, face
    oval blue, jaw yellow."""
    out = bgr.copy()
    for x, y in landmarks[:, :2]:
        cv2.circle(out, (round(float(x)), round(float(y))), 1, (255, 255, 255), -1, cv2.LINE_AA)
    colours = {
        "face_oval": (255, 0, 0),
        "jaw": (0, 255, 255),
        "right_eye": (0, 255, 0),
        "left_eye": (0, 255, 0),
    }
    for name, indices in REGIONS.items():
        points = np.round(landmarks[list(indices), :2]).astype(np.int32)
        closed = name != "jaw"
        cv2.polylines(out, [points], closed, colours.get(name, (0, 0, 255)), 1, cv2.LINE_AA)
    return out


def prepare_photo_pack(
    photo: Path,
    out_dir: Path,
    size: tuple[int, int] = (512, 512),
    crop_scale: float = 3.0,
    landmarker: FaceLandmarker | None = None,
    progress: Callable[[str], object] = print,
) -> PhotoPack:
    """Make a photo pack in `out_dir` from the one face in `photo`.

    The crop is centred on the face, `crop_scale` face widths across (3: the head and some
    shoulders), with the aspect ratio of `size`. Raises PhotoError for any unusable photo, and
    FaceModelsMissing (from the landmarker) when set-up has not been run.
    """
    photo, out_dir = Path(photo), Path(out_dir)
    if min(size) < 64 or crop_scale < 1.5:
        raise ValueError(f"size {size} must be at least 64x64 and crop_scale {crop_scale} at least 1.5")
    name = photo.name
    landmarker = landmarker or FaceLandmarker()

    rgb = read_photo(photo)
    progress(f"read {name}: {rgb.shape[1]}x{rgb.shape[0]}")
    faces = landmarker.detect(rgb)
    if not faces:
        raise PhotoError(
            f"no face found in {name}: use a photo where one face looks at the camera, upright, "
            "filling at least ~1/10 of the picture"
        )
    if len(faces) > 1:
        raise PhotoError(f"{len(faces)} faces found in {name}: crop it to one person")
    face = faces[0]
    face_width = _face_width(face.landmarks)
    progress(f"found a face in {name}: {face_width:.0f} px wide, detection score {face.score:.2f}")

    oval = face.landmarks[list(FACE_OVAL), :2]
    centre = (oval.min(0) + oval.max(0)) / 2
    crop_w = max(round(crop_scale * face_width), 1)
    crop_h = max(round(crop_w * size[1] / size[0]), 1)
    x0, y0 = round(centre[0] - crop_w / 2), round(centre[1] - crop_h / 2)
    upscale = size[0] / crop_w
    image = cv2.resize(
        _cut(rgb, x0, y0, crop_w, crop_h),
        size,
        interpolation=cv2.INTER_CUBIC if upscale > 1 else cv2.INTER_AREA,
    )
    if upscale > MAX_UPSCALE:
        progress(f"note: the face in {name} is small, enlarged {upscale:.1f}x; a larger photo looks sharper")
    scale = np.array([size[0] / crop_w, size[1] / crop_h, size[0] / crop_w], dtype=np.float32)
    carried = (face.landmarks - np.array([x0, y0, 0], dtype=np.float32)) * scale

    found = _redetect(landmarker, image, carried)
    progress(
        "landmarks found again on the crop"
        if found
        else "landmarks not found again on the crop: using the photo's, scaled to the crop"
    )
    final = found or Face(face.score, face.box, carried)
    _check_pose(name, landmarker, image, final.landmarks, found.score if found else 0.0)

    crop = (float(x0), float(y0), float(x0 + crop_w), float(y0 + crop_h))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = _write_pack(out_dir, name, image, final, crop)
    except OSError as exc:
        raise PhotoError(f"cannot write the pack for {name} to {out_dir}: {exc.strerror or exc}") from None
    progress(f"wrote {out_dir / 'pack.json'} ({size[0]}x{size[1]}, crop {crop})")
    regions = {k: np.asarray(v, dtype=np.float32) for k, v in manifest["regions"].items()}
    landmarks = np.asarray(manifest["landmarks"], dtype=np.float32)
    return PhotoPack(out_dir, image, landmarks, crop, regions)
