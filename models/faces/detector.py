"""BlazeFace face detection on LiteRT: MediaPipe's detector graph re-done in numpy and OpenCV.

MediaPipe itself cannot be installed next to numpy 2, so its CPU graph (letterbox, SSD anchors,
box decoding, weighted NMS) is reproduced here step for step; the parameters come from
mediapipe/modules/face_detection/*.pbtxt and its calculators, and the results match MediaPipe
0.10.21 to 0.01 px (see the project notes, face-landmarks.md). Both the short-range model (the
one Face Mesh uses; faces within ~2 m) and the full-range sparse model (small faces in large
photos) run through the same code with different anchor layouts.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter


@dataclass(frozen=True)
class DetectorSpec:
    """One BlazeFace variant, as configured in face_detection_{short,full}_range.pbtxt."""

    file: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int
    min_score: float


SHORT_RANGE = DetectorSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2, 0.5)
FULL_RANGE = DetectorSpec("face_detection_full_range_sparse.tflite", 192, (4,), 1, 0.6)
NMS_IOU = 0.3


@dataclass(frozen=True)
class Detection:
    """A face box in image pixels; keypoints are (6, 2): right eye, left eye, nose, mouth, ears."""

    score: float
    box: np.ndarray
    keypoints: np.ndarray


def load_interpreter(path: Path) -> Interpreter:
    """A ready LiteRT interpreter on one thread: it runs beside torch rendering in the same process,
    and a second thread gave no consistent gain on these tiny models."""
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, dtype=np.float64), -100.0, 100.0)))


def warp_roi(
    image: np.ndarray, centre: tuple[float, float], side: float, rotation: float, out_size: int, border: int
) -> np.ndarray:
    """A rotated square ROI of `image` resampled to out_size², as MediaPipe's OpenCV
    ImageToTensorConverter does it (same corner order, INTER_LINEAR), so that the models see
    exactly the pixels they saw in MediaPipe."""
    corners = cv2.boxPoints((centre, (side, side), math.degrees(rotation)))
    target = np.array([[0, out_size], [0, 0], [out_size, 0], [out_size, out_size]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    return cv2.warpPerspective(
        image, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=(0, 0, 0)
    )


def _anchor_centres(spec: DetectorSpec) -> np.ndarray:
    """SsdAnchorsCalculator with fixed_anchor_size: only the centres matter. Consecutive layers with
    the same stride share one grid, each cell holding all their anchors."""
    centres = []
    for stride, layers in itertools.groupby(spec.strides):
        per_cell = len(list(layers)) * spec.anchors_per_layer
        cells = math.ceil(spec.input_size / stride)
        ticks = (np.arange(cells) + 0.5) / cells
        xs, ys = np.meshgrid(ticks, ticks)
        centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's WEIGHTED non-max suppression: every box overlapping the best one is merged into
    it, averaged by score, which steadies the box far more than keeping the single best anchor."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    merged_faces = []
    while order.size:
        top = order[0]
        lo = np.maximum(boxes[order, :2], boxes[top, :2])
        hi = np.minimum(boxes[order, 2:], boxes[top, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        union = areas[order] + areas[top] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        overlapping = iou > NMS_IOU
        overlapping[0] = True
        group = order[overlapping]
        weights = scores[group].astype(np.float64)
        box = (boxes[group] * weights[:, None]).sum(0) / weights.sum()
        points = (keypoints[group] * weights[:, None, None]).sum(0) / weights.sum()
        merged_faces.append((float(scores[top]), box, points))
        order = order[~overlapping]
    return merged_faces


class BlazeFace:
    """One BlazeFace model. Not thread-safe: the interpreter keeps state between calls."""

    def __init__(self, model_dir: Path, spec: DetectorSpec) -> None:
        self.spec = spec
        self._interpreter = load_interpreter(model_dir / spec.file)
        self._anchors = _anchor_centres(spec)
        outputs = {int(d["shape"][-1]): d["index"] for d in self._interpreter.get_output_details()}
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._regressors = outputs[16]  # (1, anchors, 16): box centre/size + 6 keypoints
        self._logits = outputs[1]  # (1, anchors, 1)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in a uint8 RGB image, best first, in image pixels."""
        height, width = rgb.shape[:2]
        n = self.spec.input_size
        side = float(max(width, height))
        # Letterbox: the whole image, centred in a square, scaled to the model input.
        tensor = warp_roi(rgb, (width / 2.0, height / 2.0), side, 0.0, n, cv2.BORDER_CONSTANT)
        self._interpreter.set_tensor(self._input, tensor[None].astype(np.float32) * (2.0 / 255.0) - 1.0)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._regressors)[0] / n
        scores = sigmoid(self._interpreter.get_tensor(self._logits)[0, :, 0])

        centres = raw[:, :2] + self._anchors
        sizes = raw[:, 2:4]
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + self._anchors[:, None, :]
        keep = (scores >= self.spec.min_score) & (sizes >= 0).all(axis=1)

        # Undo the letterbox: model-input units -> image pixels.
        offset = np.array([(width - side) / 2.0, (height - side) / 2.0])
        return [
            Detection(score, box * side + np.tile(offset, 2), points * side + offset)
            for score, box, points in _weighted_nms(boxes[keep], keypoints[keep], scores[keep])
        ]
