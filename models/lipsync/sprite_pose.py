"""Where a posed sprite's parts go: its layout, the drawing mix of a pose, and the head's warp.

Both sprite kernels (the batched torch one for GPUs, the per-frame OpenCV one for CPUs) draw from
these, so a pose means the same picture on either: the mix of mouth and eye drawings, the region
the head can reach, and the inverse affine map from that region back into the head crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.lipsync.params import BLINK, BREATH, HEAD_DX, HEAD_DY, HEAD_TILT, MOUTH
from models.lipsync.visemes import VISEME_SHAPES, Viseme

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""
MOUTH_REACH = 0.3
"""Each viseme's Gaussian around its (jaw, width, round) target has a width of MOUTH_REACH times the
distance to the nearest other target. Sharp, so a frame shows one drawing or a crossfade of two, as
hand-drawn lip sync does, instead of a ghosted stack; scaled, so close pairs (fv, cons) still part
cleanly while far ones (eh to aa) crossfade over a longer stretch of the jaw's travel."""
_TARGETS = np.array([VISEME_SHAPES[v] for v in Viseme], dtype=np.float64)
_GAPS = np.sqrt(((_TARGETS[:, None] - _TARGETS[None]) ** 2).sum(-1)) + np.eye(len(Viseme)) * 1e9
_SIGMAS = MOUTH_REACH * _GAPS.min(1)


@dataclass(frozen=True)
class SpriteLayout:
    """Where a face's parts sit; faces with equal layouts share every tensor shape, so batch together."""

    size: tuple[int, int]
    head: Box  # the head group's crop in the frame
    mouth: Box  # the mouth crop, relative to the head crop
    eyes: Box  # the eyes crop, relative to the head crop
    body: Box  # the frame region the body covers at any breath
    pad: int  # rows the body table holds beyond that region, above and below
    pivot: tuple[float, float]  # centre of head roll, in pixel-centre coordinates
    breath_px: float  # how far the body rises at breath 1


def mouth_weights(params: np.ndarray) -> np.ndarray:
    """(B, N_PARAMS) poses -> float32 (B, 11) weights of the mouth drawings: a normalised Gaussian RBF
    over the viseme targets."""
    mouth = params[:, MOUTH].astype(np.float64)
    logits = ((mouth[:, None, :] - _TARGETS) ** 2).sum(-1) / (-2 * _SIGMAS**2)
    # softmax of the log-Gaussians: stays normalised far from every target, where each one underflows
    weights = np.exp(logits - logits.max(1, keepdims=True))
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def eye_weights(params: np.ndarray) -> np.ndarray:
    """(B, N_PARAMS) poses -> float32 (B, 3) weights of open, half, closed: linear between neighbours."""
    b = np.clip(params[:, BLINK], 0, 1)
    opened, closed = np.clip(1 - 2 * b, 0, None), np.clip(2 * b - 1, 0, None)
    return np.stack((opened, 1 - opened - closed, closed), axis=1).astype(np.float32)


def warp_region(lay: SpriteLayout, params: np.ndarray) -> Box:
    """The frame region the warped head group covers in any of these frames: the bounding box of its
    crop (grown by the pixel bilinear sampling reaches) moved and rolled as each pose says."""
    width, height = lay.size
    hx0, hy0, hx1, hy1 = lay.head
    px, py = lay.pivot
    tilt = params[:, HEAD_TILT].astype(np.float64)[:, None]
    a = np.array([hx0 - 1, hx1, hx1, hx0 - 1], np.float64) - px  # the corners, about the pivot
    b = np.array([hy0 - 1, hy0 - 1, hy1, hy1], np.float64) - py
    xs = np.cos(tilt) * a - np.sin(tilt) * b + px + params[:, HEAD_DX, None] * width
    ys = np.sin(tilt) * a + np.cos(tilt) * b + py + params[:, HEAD_DY, None] * height
    x0, y0 = math.floor(xs.min()), math.floor(ys.min())
    return max(x0, 0), max(y0, 0), min(math.ceil(xs.max()) + 1, width), min(math.ceil(ys.max()) + 1, height)


def head_affine(lay: SpriteLayout, region: Box, params: np.ndarray) -> np.ndarray:
    """(B, 2, 3) float64: for pixel (i, j) of `region`, the head-crop pixel it shows is M @ (i, j, 1).

    The head moves by (dx, dy) and rolls clockwise by tilt about the pivot; this is the inverse, with
    pixel centres at integer coordinates."""
    width, height = lay.size
    px, py = lay.pivot
    tilt = params[:, HEAD_TILT].astype(np.float64)
    cos, sin = np.cos(tilt), np.sin(tilt)
    u0 = region[0] - px - params[:, HEAD_DX].astype(np.float64) * width  # u, v of the region's first pixel
    v0 = region[1] - py - params[:, HEAD_DY].astype(np.float64) * height
    m = np.empty((len(params), 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos, sin, cos * u0 + sin * v0 + px - lay.head[0]
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = -sin, cos, cos * v0 - sin * u0 + py - lay.head[1]
    return m


def body_rise(lay: SpriteLayout, params: np.ndarray) -> np.ndarray:
    """(B,) float64: how many pixels each frame's body is raised by its breath."""
    return np.clip(params[:, BREATH].astype(np.float64), -1, 1) * lay.breath_px
