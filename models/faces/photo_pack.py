"""The "photo" avatar pack as the renderer reads it: DIR/pack.json (crop, landmarks, regions) and
DIR/image.png, the face picture it warps. Writing one is photo_prepare.py's job; reading one needs
no face-detection runtime, so a studio that only renders prepared packs never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.avatars import PackError, read_manifest
from models.faces.mesh import FACE_OVAL, JAW, LEFT_EYE, LIPS_INNER, LIPS_OUTER, RIGHT_EYE

PACK_VERSION = 1
IMAGE_FILE = "image.png"
PREVIEW_FILE = "preview.png"
REGIONS: dict[str, tuple[int, ...]] = {
    "lips_outer": LIPS_OUTER,
    "lips_inner": LIPS_INNER,
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "face_oval": FACE_OVAL,
    "jaw": JAW,
}


@dataclass(frozen=True)
class PhotoPack:
    """A prepared photo pack. Pixel coordinates: pixel i covers [i, i+1)."""

    path: Path
    image: np.ndarray
    """uint8 (H, W, 3) RGB: the cropped face picture at pack size."""
    landmarks: np.ndarray
    """float32 (468, 3): x, y in `image` pixels, z scaled like x (relative depth)."""
    crop: tuple[float, float, float, float]
    """x0, y0, x1, y1 of the crop in the source photo's pixels (may reach outside it: padded)."""
    regions: dict[str, np.ndarray]
    """float32 (n, 2) contours in `image` pixels, keyed as REGIONS; "jaw" is open (ear, chin, ear)."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.image.shape[1], self.image.shape[0]

    @classmethod
    def load(cls, pack_dir: Path) -> PhotoPack:
        """Read a pack written by prepare_photo_pack; raises PackError saying what is broken."""
        pack_dir = Path(pack_dir)
        manifest = read_manifest(pack_dir)
        where = pack_dir / "pack.json"
        redo = f"prepare it again with `avatarcast avatar prepare PHOTO -o {pack_dir}`"
        if manifest["kind"] != "photo":
            raise PackError(f"{where} is a {manifest['kind']} pack, not a photo pack")
        if manifest.get("version") != PACK_VERSION:
            raise PackError(f"{where}: version {manifest.get('version')!r} is not {PACK_VERSION}; {redo}")
        try:
            size = tuple(int(v) for v in manifest["size"])
            crop = tuple(float(v) for v in manifest["crop"])
            landmarks = np.asarray(manifest["landmarks"], dtype=np.float32)
            regions = {name: np.asarray(manifest["regions"][name], dtype=np.float32) for name in REGIONS}
            image_name = str(manifest.get("image", IMAGE_FILE))
        except KeyError as exc:
            raise PackError(f"{where} has no {exc}; {redo}") from None
        except (TypeError, ValueError) as exc:
            raise PackError(f"{where} holds a malformed value ({exc}); {redo}") from None
        if len(size) != 2 or len(crop) != 4:
            raise PackError(f"{where}: size must be [width, height] and crop [x0, y0, x1, y1]; {redo}")
        if landmarks.shape != (468, 3) or not np.isfinite(landmarks).all():
            raise PackError(f"{where}: landmarks must be 468 finite [x, y, z] rows; {redo}")
        for name, polygon in regions.items():
            if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
                raise PackError(f"{where}: region {name!r} needs 3 or more [x, y] points; {redo}")
        image = _read_pack_image(pack_dir / image_name, redo)
        if image.shape[1::-1] != size:
            raise PackError(f"{pack_dir / image_name} is not {size[0]}x{size[1]} as pack.json says; {redo}")
        return cls(pack_dir, image, landmarks, crop, regions)


def _read_pack_image(path: Path, redo: str) -> np.ndarray:
    try:
        bgr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    except (OSError, cv2.error):
        bgr = None
    if bgr is None:
        raise PackError(f"{path} is missing or cannot be decoded; {redo}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
