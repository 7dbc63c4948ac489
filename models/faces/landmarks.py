"""468-point face landmarks (MediaPipe Face Mesh) for still photos, offline, on numpy 2.

The graph is MediaPipe's `FaceMesh(static_image_mode=True)`: BlazeFace finds the face, a square
ROI 1.5x the box, rotated so the eyes are level, is resampled to 192x192, face_landmark.tflite
gives 468 (x, y, z) points in that crop, and they are projected back onto the image. Points come
out in the pixels of the given image, z on the same scale as x (relative depth, nose tip < 0).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.defaults import face_models_dir
from models.faces.detector import (
    FULL_RANGE,
    SHORT_RANGE,
    BlazeFace,
    Detection,
    load_interpreter,
    sigmoid,
    warp_roi,
)
from models.faces.fetch import missing_face_models
from models.faces.mesh import FACE_OVAL, FACE_SIDES, JAW, LEFT_EYE, LIPS_INNER, LIPS_OUTER, RIGHT_EYE

LANDMARK_FILE = "face_landmark.tflite"
LANDMARK_INPUT = 192
ROI_SCALE = 1.5
MIN_PRESENCE = 0.5
__all__ = [
    "FACE_OVAL", "FACE_SIDES", "JAW", "LEFT_EYE", "LIPS_INNER", "LIPS_OUTER", "RIGHT_EYE",
    "Face", "FaceLandmarker", "FaceModelsMissing",
]  # fmt: skip


class FaceModelsMissing(RuntimeError):
    """The TFLite models have not been set up; the message says how to get them."""


@dataclass(frozen=True)
class Face:
    score: float
    """BlazeFace detection score (0..1); a threshold, not a quality measure."""
    box: tuple[float, float, float, float]
    """x0, y0, x1, y1 of the detector's face box, in image pixels."""
    landmarks: np.ndarray
    """float32 (468, 3): x, y in image pixels, z in the same scale as x."""


class FaceLandmarker:
    """Finds faces and their 468 landmarks in uint8 RGB images.

    Loading takes tens of milliseconds; keep one and reuse it. Calls are serialised by a lock
    because the interpreters keep state between set_tensor, invoke and get_tensor.
    """

    def __init__(self, model_dir: Path | None = None, max_faces: int = 4) -> None:
        model_dir = face_models_dir() if model_dir is None else Path(model_dir)
        missing = missing_face_models(model_dir)
        if missing:
            raise FaceModelsMissing(
                f"face models missing in {model_dir}: {', '.join(missing)}; "
                "run `avatarcast setup` (or `make demo`) to fetch them"
            )
        self.max_faces = max_faces
        self._detectors = (BlazeFace(model_dir, SHORT_RANGE), BlazeFace(model_dir, FULL_RANGE))
        self._mesh = load_interpreter(model_dir / LANDMARK_FILE)
        outputs = sorted(self._mesh.get_output_details(), key=lambda d: -int(np.prod(d["shape"])))
        self._mesh_input = self._mesh.get_input_details()[0]["index"]
        self._mesh_points = outputs[0]["index"]  # 1404 = 468 * 3
        self._mesh_presence = outputs[1]["index"]  # face-present logit
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in `rgb` (uint8, (H, W, 3)), best detection first, at most `max_faces`.

        The short-range detector (MediaPipe Face Mesh's own) runs first; only when it finds
        nothing does the full-range one look for small faces, which it finds but places a little
        less precisely.
        """
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 2:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {rgb.dtype} {rgb.shape}")
        rgb = np.ascontiguousarray(rgb)
        with self._lock:
            detections: list[Detection] = []
            for detector in self._detectors:
                detections = detector.detect(rgb)
                if detections:
                    break
            faces = (self._landmarks(rgb, d) for d in detections[: self.max_faces])
            return [face for face in faces if face is not None]

    def _landmarks(self, rgb: np.ndarray, detection: Detection) -> Face | None:
        """Face Mesh on the detection's ROI, or None when the mesh model says it is no face."""
        (right_eye, left_eye), box = detection.keypoints[:2], detection.box
        rotation = -math.atan2(-(left_eye[1] - right_eye[1]), left_eye[0] - right_eye[0])
        rotation -= 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))
        centre = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
        side = max(box[2] - box[0], box[3] - box[1]) * ROI_SCALE

        crop = warp_roi(rgb, centre, side, rotation, LANDMARK_INPUT, cv2.BORDER_REPLICATE)
        self._mesh.set_tensor(self._mesh_input, crop[None].astype(np.float32) / 255.0)
        self._mesh.invoke()
        if sigmoid(self._mesh.get_tensor(self._mesh_presence).ravel()[0]) <= MIN_PRESENCE:
            return None
        points = self._mesh.get_tensor(self._mesh_points).reshape(-1, 3).astype(np.float64) / LANDMARK_INPUT

        # Crop units -> image pixels: rotate about the ROI centre, scale by its side.
        cos, sin = math.cos(rotation), math.sin(rotation)
        x, y = points[:, 0] - 0.5, points[:, 1] - 0.5
        landmarks = np.stack(
            [
                (cos * x - sin * y) * side + centre[0],
                (sin * x + cos * y) * side + centre[1],
                points[:, 2] * side,
            ],
            axis=1,
        )
        return Face(detection.score, tuple(float(v) for v in box), landmarks.astype(np.float32))
