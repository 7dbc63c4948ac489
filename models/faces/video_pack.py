"""The "video" avatar pack as the renderer reads it: a few seconds of a real clip of the person,
cropped around the face. Writing one is video_prepare.py's job (it needs the face-detection
runtime; reading does not).

Neural lip-sync (Wav2Lip family) redraws only the mouth region of real frames, so an avatar made
from a short clip keeps natural blinks and head motion: idle plays the frames forwards then
backwards (loop_index), speech replaces the face box of whichever frame is on air.

Layout of DIR:
  pack.json         format/kind/version like every pack, fps, frame_count, size, crop, and the
                    per-frame face box [x0, y0, x1, y1] in pack pixels
  frames/000000.jpg the cropped frames, JPEG quality 95: any frame decodes on its own in ~2 ms
                    (random access while looping, no video decoder), at a small fraction of raw size
  landmarks.npy     float32 (N, 468, 3) Face Mesh landmarks per frame, in pack pixels

Every frame shares one crop of the source (a fixed camera view, as in photo packs: a few face
widths across), so the background stays still and only the face moves inside it. The face box
is the face oval's extent, smoothed over ~0.2 s so that a box cut for the network does not jitter.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.avatars import PACK_FORMAT, PackError
from models.faces.photo_io import PhotoError

__all__ = ["VideoError", "VideoPack", "loop_index"]  # and prepare_video_pack, imported on use

PACK_KIND = "video"
PACK_VERSION = 1
FRAMES_DIR = "frames"
FRAME_NAME = "{:06d}.jpg"
FRAMES_LAYOUT = f"{FRAMES_DIR}/{FRAME_NAME}"
LANDMARKS_FILE = "landmarks.npy"


class VideoError(PhotoError):
    """A clip that cannot become a video avatar; the message names the file, the problem and the fix.
    A PhotoError, so whatever reports photo problems to the user reports these too."""


@dataclass(frozen=True)
class VideoPack:
    """A prepared video pack. Pixel coordinates: pixel i covers [i, i+1)."""

    path: Path
    frames: np.ndarray
    """uint8 (N, H, W, 3) RGB at pack size."""
    boxes: np.ndarray
    """float32 (N, 4): x0, y0, x1, y1 of the smoothed face box in pack pixels."""
    fps: float
    landmarks: np.ndarray | None
    """float32 (N, 468, 3) in pack pixels (frames without a face interpolated), or None if absent."""
    crop: tuple[float, float, float, float]
    """x0, y0, x1, y1 of the shared crop in the source clip's pixels (may reach outside: padded)."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.frames.shape[2], self.frames.shape[1]

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps

    @classmethod
    def load(cls, pack_dir: Path) -> VideoPack:
        """Read a pack written by prepare_video_pack; raises PackError saying what is broken."""
        pack_dir = Path(pack_dir)
        where = pack_dir / "pack.json"
        redo = f"prepare it again from the clip (prepare_video_pack(CLIP, {str(pack_dir)!r}))"
        manifest = _read_manifest(where)
        try:
            fps = float(manifest["fps"])
            count = int(manifest["frame_count"])
            size = tuple(int(v) for v in manifest["size"])
            boxes = np.asarray(manifest["boxes"], dtype=np.float32)
            cx0, cy0, cx1, cy1 = (float(v) for v in manifest["crop"])
            landmarks_name = manifest.get("landmarks")
            layout = manifest.get("frames", FRAMES_LAYOUT)
        except KeyError as exc:
            raise PackError(f"{where} has no {exc}; {redo}") from None
        except (TypeError, ValueError) as exc:  # also a crop that is not 4 numbers
            raise PackError(f"{where} holds a malformed value ({exc}); {redo}") from None
        if not (fps > 0 and count >= 1 and len(size) == 2):
            raise PackError(f"{where}: fps, frame_count or size is out of range; {redo}")
        if layout != FRAMES_LAYOUT:
            raise PackError(f"{where}: frames {layout!r} is not the supported layout {FRAMES_LAYOUT!r}; {redo}")
        if boxes.shape != (count, 4) or not np.isfinite(boxes).all():
            raise PackError(f"{where}: boxes must be {count} finite [x0, y0, x1, y1] rows; {redo}")
        frames = _read_frames(pack_dir, count, size, redo)
        landmarks = None
        if landmarks_name:
            try:
                landmarks = np.load(pack_dir / str(landmarks_name), allow_pickle=False).astype(np.float32)
            except (OSError, ValueError) as exc:
                raise PackError(f"{pack_dir / str(landmarks_name)} cannot be read ({exc}); {redo}") from None
            if landmarks.shape != (count, 468, 3):
                raise PackError(f"{pack_dir / str(landmarks_name)} is not ({count}, 468, 3); {redo}")
        return cls(pack_dir, frames, boxes, fps, landmarks, (cx0, cy0, cx1, cy1))


def loop_index(i: int, n: int) -> int:
    """Frame to show at step `i` of an idle loop over `n` frames: forwards, then backwards
    ("ping-pong": 0 1 2 3 2 1 0 1 ...), so the loop never jumps from the last frame to the first.
    The turning frames are shown once, not twice, so the motion does not stall there."""
    if n <= 0:
        raise ValueError(f"a loop needs at least one frame, got n={n}")
    if n == 1:
        return 0
    phase = i % (2 * n - 2)
    return phase if phase < n else 2 * n - 2 - phase


def _read_manifest(where: Path) -> dict:
    """pack.json checked for format, kind and version (models.avatars.read_manifest predates "video")."""
    try:
        manifest = json.loads(where.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PackError(f"{where} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise PackError(f"{where} is not an avatar pack (format must be {PACK_FORMAT!r})")
    if manifest.get("kind") != PACK_KIND:
        raise PackError(f"{where} is a {manifest.get('kind')!r} pack, not a video pack")
    if manifest.get("version") != PACK_VERSION:
        raise PackError(f"{where}: version {manifest.get('version')!r} is not {PACK_VERSION}; prepare it again")
    return manifest


def _read_frames(pack_dir: Path, count: int, size: tuple[int, ...], redo: str) -> np.ndarray:
    paths = [pack_dir / FRAMES_DIR / FRAME_NAME.format(i) for i in range(count)]

    def decode(path: Path) -> np.ndarray | None:
        try:
            bgr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
        except (OSError, cv2.error):
            return None
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # cv2 decodes without the GIL
        decoded = list(pool.map(decode, paths))
    frames = np.empty((count, size[1], size[0], 3), dtype=np.uint8)
    for i, (path, frame) in enumerate(zip(paths, decoded, strict=True)):
        if frame is None:
            raise PackError(f"{path} is missing or cannot be decoded; {redo}")
        if frame.shape[1::-1] != size:
            raise PackError(f"{path} is not {size[0]}x{size[1]} as pack.json says; {redo}")
        frames[i] = frame
    return frames
