"""Making a "video" avatar pack from a short clip (layout and reader: video_pack.py).

The clip is decoded twice with PyAV: the first pass finds the face in every frame (the project's
FaceLandmarker, one face tracked from frame to frame), the second crops every frame to one shared
region and writes it. Only one frame is held at a time, so a 1080p clip costs no more memory than
a small one. Frames without a face are filled in from their neighbours when they are few; too many,
a clip under a second, or a face too small for the lip-sync networks is refused with a VideoError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from models.avatars import PACK_FORMAT
from models.faces.landmarks import FACE_OVAL, FACE_SIDES, Face, FaceLandmarker
from models.faces.photo_io import MAX_PIXELS
from models.faces.video_pack import (
    FRAME_NAME,
    FRAMES_DIR,
    FRAMES_LAYOUT,
    LANDMARKS_FILE,
    PACK_KIND,
    PACK_VERSION,
    VideoError,
    VideoPack,
)

__all__ = ["prepare_video_pack"]

JPEG_QUALITY = 95
MIN_SECONDS = 1.0
# Frames without a face that are filled in from their neighbours; more and the clip is refused.
MAX_MISSING_SHARE = 0.1
# Face width (ear to ear) in source pixels below which the lip-sync networks get too little detail.
MIN_FACE_PX = 64
SMOOTH_SECONDS = 0.2


def _face_width(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[FACE_SIDES[1], :2] - landmarks[FACE_SIDES[0], :2]))


def _cut(rgb: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """rgb[y0:y0+height, x0:x0+width], edges replicated where the box leaves the frame."""
    h, w = rgb.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + width, w), min(y0 + height, h)
    return cv2.copyMakeBorder(
        rgb[sy0:sy1, sx0:sx1], sy0 - y0, y0 + height - sy1, sx0 - x0, x0 + width - sx1, cv2.BORDER_REPLICATE
    )


def _open(clip: Path) -> av.container.InputContainer:
    name = clip.name
    if not clip.is_file():
        raise VideoError(f"cannot read {name}: there is no such file ({clip})")
    try:
        container = av.open(str(clip))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(
            f"cannot read {name}: it is not a video FFmpeg can open ({exc}); export it again as MP4 (H.264)"
        ) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{name} has no video track (audio only?); use a clip that shows the person")
    return container


def _clip_fps(clip: Path) -> float:
    with _open(clip) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0 or float(rate) > 240:
        raise VideoError(f"{clip.name} has no usable frame rate ({rate}); export it again with a constant frame rate")
    return float(rate)


def _decode(clip: Path, max_frames: int) -> Iterator[np.ndarray]:
    """The clip's first `max_frames` frames as uint8 RGB; a damaged tail ends the clip early."""
    with _open(clip) as container:
        stream = container.streams.video[0]
        if stream.width * stream.height > MAX_PIXELS:
            raise VideoError(f"{clip.name} is {stream.width}x{stream.height}; scale it down to 1080p or less")
        count = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                count += 1
                if count >= max_frames:
                    return
        except av.FFmpegError as exc:
            if count == 0:
                raise VideoError(f"cannot decode {clip.name}: {exc}; export it again as MP4 (H.264)") from None


def _seconds(indices: list[int], fps: float) -> str:
    """'0.0-0.4 s, 2.1 s': the times of runs of frame indices."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = [f"{r[0] / fps:.1f}" + (f"-{r[-1] / fps:.1f}" if len(r) > 1 else "") for r in runs[:8]]
    return ", ".join(parts) + (", ..." if len(runs) > 8 else "") + " s"


def _track(landmarker: FaceLandmarker, frames: Iterator[np.ndarray]) -> tuple[list[np.ndarray | None], int, int]:
    """Landmarks of the same face in every frame (None where none was found), and the frame size.

    With several faces in view, each frame keeps the one nearest the face of the frame before.
    """
    found: list[np.ndarray | None] = []
    previous: np.ndarray | None = None
    width = height = 0
    for rgb in frames:
        height, width = rgb.shape[:2]
        faces: list[Face] = landmarker.detect(rgb)
        if not faces:
            found.append(None)
            continue
        if previous is not None:
            faces.sort(key=lambda f: float(np.linalg.norm(f.landmarks[:, :2].mean(0) - previous)))
        found.append(faces[0].landmarks)
        previous = faces[0].landmarks[:, :2].mean(0)
    return found, width, height


def _fill_gaps(found: list[np.ndarray | None]) -> np.ndarray:
    """(N, 468, 3): frames without a face interpolated linearly between their neighbours."""
    known = np.array([i for i, f in enumerate(found) if f is not None])
    stacked = np.stack([f for f in found if f is not None]).reshape(len(known), -1)
    every = np.arange(len(found))
    filled = np.stack([np.interp(every, known, stacked[:, j]) for j in range(stacked.shape[1])], axis=1)
    return filled.reshape(len(found), 468, 3).astype(np.float32)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` frames along axis 0; near the ends the window shrinks
    symmetrically, so steady motion is kept exactly and the first/last boxes do not lag."""
    half = window // 2
    out = np.empty_like(values)
    for i in range(len(values)):
        h = min(half, i, len(values) - 1 - i)
        out[i] = values[i - h : i + h + 1].mean(axis=0)
    return out


def prepare_video_pack(
    clip: Path,
    out_dir: Path,
    *,
    size: tuple[int, int] = (512, 512),
    max_seconds: float = 10.0,
    crop_scale: float = 3.0,
    min_face_px: float = MIN_FACE_PX,
    landmarker: FaceLandmarker | None = None,
    progress: Callable[[str], object] = print,
) -> VideoPack:
    """Make a video pack in `out_dir` from the first `max_seconds` of `clip` (one person, on camera).

    The clip is decoded twice (find the faces, then crop), so only one frame is held at a time.
    Raises VideoError (a PhotoError) for any unusable clip, FaceModelsMissing when set-up has not run.
    """
    clip, out_dir = Path(clip), Path(out_dir)
    if min(size) < 64 or crop_scale < 1.5 or max_seconds < MIN_SECONDS:
        raise ValueError(f"size {size} must be >= 64x64, crop_scale {crop_scale} >= 1.5, max_seconds >= {MIN_SECONDS}")
    name = clip.name
    fps = _clip_fps(clip)
    max_frames = max(int(max_seconds * fps), 1)
    landmarker = landmarker or FaceLandmarker()

    found, width, height = _track(landmarker, _decode(clip, max_frames))
    count = len(found)
    if count / fps < MIN_SECONDS:
        raise VideoError(
            f"{name} is too short: {count} frame(s), {count / fps:.2f} s; use a clip of at least "
            f"{MIN_SECONDS:.0f} s (a few seconds of the person looking at the camera, mouth closed)"
        )
    progress(f"read {name}: {count} frames of {width}x{height} at {fps:.2f} fps")
    missing = [i for i, f in enumerate(found) if f is None]
    if len(missing) == count:
        raise VideoError(
            f"no face found in any of the {count} frames of {name}: use a clip where one face looks at the camera"
        )
    if len(missing) > MAX_MISSING_SHARE * count:
        raise VideoError(
            f"no face found in {len(missing)} of {count} frames of {name} (at {_seconds(missing, fps)}): "
            "use a clip where the face stays in view, upright and facing the camera, or trim it"
        )
    if missing:
        progress(f"no face in {len(missing)} frame(s) at {_seconds(missing, fps)}: filled in from their neighbours")
    landmarks = _fill_gaps(found)
    face_width = float(np.median([_face_width(lm) for lm in landmarks]))
    if face_width < min_face_px:
        raise VideoError(
            f"the face in {name} is only {face_width:.0f} px wide; it needs at least {min_face_px:.0f} px: "
            "film closer or use a higher resolution"
        )

    oval = landmarks[:, list(FACE_OVAL), :2]
    raw_boxes = np.concatenate([oval.min(axis=1), oval.max(axis=1)], axis=1).astype(np.float64)
    boxes = _smooth(raw_boxes, max(1, round(SMOOTH_SECONDS * fps)) | 1)
    (ux0, uy0), (ux1, uy1) = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    aspect = size[1] / size[0]
    crop_w = max(round(max(crop_scale * face_width, 1.25 * (ux1 - ux0), 1.25 * (uy1 - uy0) / aspect)), 1)
    crop_h = max(round(crop_w * aspect), 1)
    x0, y0 = round((ux0 + ux1) / 2 - crop_w / 2), round((uy0 + uy1) / 2 - crop_h / 2)
    scale = np.array([size[0] / crop_w, size[1] / crop_h], dtype=np.float64)
    offset = np.array([x0, y0], dtype=np.float64)
    pack_boxes = ((boxes.reshape(-1, 2, 2) - offset) * scale).reshape(-1, 4).astype(np.float32)
    pack_landmarks = landmarks.copy()
    pack_landmarks[..., :2] = (landmarks[..., :2] - offset) * scale
    pack_landmarks[..., 2] *= scale[0]
    crop = (float(x0), float(y0), float(x0 + crop_w), float(y0 + crop_h))
    progress(f"face {face_width:.0f} px wide; crop {crop} -> {size[0]}x{size[1]}")

    try:
        written = _write_pack(
            clip, out_dir, size, max_frames, (x0, y0, crop_w, crop_h), fps, pack_boxes, pack_landmarks, crop
        )
    except OSError as exc:
        raise VideoError(f"cannot write the pack for {name} to {out_dir}: {exc.strerror or exc}") from None
    if written != count:
        raise VideoError(f"{name} decoded to {written} frames the second time, not {count}; export it again")
    progress(f"wrote {out_dir / 'pack.json'} ({count} frames, {count / fps:.1f} s)")
    return VideoPack.load(out_dir)


def _write_pack(
    clip: Path,
    out_dir: Path,
    size: tuple[int, int],
    max_frames: int,
    cut: tuple[int, int, int, int],
    fps: float,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    crop: tuple[float, ...],
) -> int:
    """Crop and write every frame, then landmarks.npy, then pack.json (last, by rename: a pack that
    has one is complete). Returns the number of frames written."""
    frames_dir = out_dir / FRAMES_DIR
    frames_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pack.json").unlink(missing_ok=True)
    for stale in frames_dir.glob("*.jpg"):
        stale.unlink()
    x0, y0, crop_w, crop_h = cut
    count = 0
    for i, rgb in enumerate(_decode(clip, max_frames)):
        frame = _cut(rgb, x0, y0, crop_w, crop_h)
        upscale = size[0] > crop_w
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC if upscale else cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        )
        if not ok:
            raise OSError(f"JPEG encoding of frame {i} failed")
        (frames_dir / FRAME_NAME.format(i)).write_bytes(jpeg.tobytes())
        count += 1
    if count != len(boxes):
        return count
    np.save(out_dir / LANDMARKS_FILE, landmarks.astype(np.float32), allow_pickle=False)
    manifest = {
        "format": PACK_FORMAT,
        "kind": PACK_KIND,
        "version": PACK_VERSION,
        "source": clip.name,
        "size": list(size),
        "fps": fps,
        "frame_count": count,
        "frames": FRAMES_LAYOUT,
        "landmarks": LANDMARKS_FILE,
        "crop": [round(v, 2) for v in crop],
        "boxes": np.round(boxes.astype(np.float64), 2).tolist(),
    }
    part = out_dir / "pack.json.part"
    part.write_text(json.dumps(manifest, separators=(",", ":")))
    os.replace(part, out_dir / "pack.json")
    return count
