"""The sprite kernel for CPUs: one frame at a time in uint8, with OpenCV's SIMD warps and blends.

On a CPU the batched float32 tensor kernel spends most of a frame copying the whole head group as
floats before pasting a mouth into it, and blending float frames (~8.5 ms of a core per 512x512
frame). Here a frame is the same picture drawn from uint8 premultiplied RGBA crops: at most two
mouth drawings and two eye drawings are mixed (the RBF weights are sharp; the rest weigh < 1/255),
the head is warped by `cv2.warpAffine` straight into its reachable region, and layers go "over"
with saturating uint8 multiply-adds. Batching buys nothing here (no launch to amortise), so the
kernel loops; the torch kernel remains the batched one for GPUs, and a test holds the two to the
same picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from models.lipsync.sprite_pose import (
    Box,
    SpriteLayout,
    body_rise,
    eye_weights,
    head_affine,
    mouth_weights,
    warp_region,
)

_NEGLIGIBLE = 0.5 / 255
"""A drawing weighing less than this changes no uint8 pixel; it is left out of the mix."""


@dataclass(frozen=True)
class CpuSprite:
    """A prepared sprite face's layers as uint8 premultiplied RGBA (alpha 0..255), HWC."""

    background: np.ndarray  # (H, W, 3) RGB
    head: np.ndarray  # (h, w, 4): the head group with neither eyes nor mouth
    mouths: np.ndarray  # (11, mh, mw, 4): the head group's mouth crop under each mouth drawing
    eyes: np.ndarray  # (3, eh, ew, 4): the same for open, half and closed eyes
    body: np.ndarray  # (rows, bw, 4): body rows, padded for the breathing shift

    @classmethod
    def from_tensors(
        cls,
        lay: SpriteLayout,
        background: torch.Tensor,
        head: torch.Tensor,
        mouths: torch.Tensor,
        eyes: torch.Tensor,
        body: torch.Tensor,
    ) -> CpuSprite:
        """From the torch kernel's float layers: colours premultiplied 0..255, alpha 0..1, CHW."""

        def crops(flat: torch.Tensor, box: Box) -> np.ndarray:
            x0, y0, x1, y1 = box
            return _to_u8(flat.view(len(flat), 4, y1 - y0, x1 - x0).permute(0, 2, 3, 1))

        bx0, _, bx1, _ = lay.body
        return cls(
            background=background.cpu().numpy().copy(),
            head=_to_u8(head.permute(1, 2, 0)),
            mouths=crops(mouths, lay.mouth),
            eyes=crops(eyes, lay.eyes),
            body=_to_u8(body.view(len(body), 4, bx1 - bx0).permute(0, 2, 1)),
        )


def render_frames(lay: SpriteLayout, sprites: list[CpuSprite], params: np.ndarray, out: np.ndarray) -> None:
    """sprites[i] posed by params[i] -> out[i], uint8 (H, W, 3) RGB, for faces sharing `lay`."""
    mouths, eyes, rises = mouth_weights(params), eye_weights(params), body_rise(lay, params)
    for i, sprite in enumerate(sprites):
        _draw(out[i], lay, sprite, params[i : i + 1], mouths[i], eyes[i], float(rises[i]))


def render_frames_i420(
    lay: SpriteLayout, sprites: list[CpuSprite], params: np.ndarray, into: Sequence[np.ndarray]
) -> None:
    """The same frames as I420 (uint8 (H * 3 // 2, W)) into `into`: each is drawn in one reused RGB frame
    (it stays in cache) and converted by OpenCV's SIMD BT.601 conversion straight into its slot."""
    mouths, eyes, rises = mouth_weights(params), eye_weights(params), body_rise(lay, params)
    width, height = lay.size
    scratch = np.empty((height, width, 3), np.uint8)
    for i, sprite in enumerate(sprites):
        _draw(scratch, lay, sprite, params[i : i + 1], mouths[i], eyes[i], float(rises[i]))
        cv2.cvtColor(scratch, cv2.COLOR_RGB2YUV_I420, dst=into[i])


def _draw(
    frame: np.ndarray,
    lay: SpriteLayout,
    sprite: CpuSprite,
    row: np.ndarray,
    mouth: np.ndarray,
    eye: np.ndarray,
    rise: float,
) -> None:
    """One posed frame into `frame` (uint8 (H, W, 3) RGB)."""
    np.copyto(frame, sprite.background)
    head = sprite.head.copy()
    _paste(head, lay.mouth, _mix(sprite.mouths, mouth))
    _paste(head, lay.eyes, _mix(sprite.eyes, eye))
    region = warp_region(lay, row)
    x0, y0, x1, y1 = region
    warped = cv2.warpAffine(
        head,
        head_affine(lay, region, row)[0],
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    _over(frame[y0:y1, x0:x1], warped)
    bx0, by0, bx1, by1 = lay.body
    _over(frame[by0:by1, bx0:bx1], _shifted_body(sprite.body, lay, rise))


def _to_u8(layer: torch.Tensor) -> np.ndarray:
    """Float premultiplied RGBA, channels last, alpha 0..1 -> contiguous uint8 with alpha 0..255."""
    scaled = layer.cpu().float().clone()
    scaled[..., 3] *= 255
    return np.ascontiguousarray(scaled.add_(0.5).clamp_(0, 255).to(torch.uint8).numpy())


def _mix(drawings: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mix of the (at most two) drawings that show; the others weigh < 1/255."""
    order = np.argsort(weights)[::-1]
    first, second = int(order[0]), int(order[1])
    if weights[second] < _NEGLIGIBLE:
        return drawings[first]
    total = float(weights[first] + weights[second])
    return cv2.addWeighted(drawings[first], weights[first] / total, drawings[second], weights[second] / total, 0)


def _paste(head: np.ndarray, box: Box, crop: np.ndarray) -> None:
    x0, y0, x1, y1 = box
    head[y0:y1, x0:x1] = crop


def _shifted_body(table: np.ndarray, lay: SpriteLayout, rise: float) -> np.ndarray:
    """The body region with the body raised by `rise` pixels, sub-pixel (linear between rows)."""
    rows = lay.body[3] - lay.body[1]
    whole = int(np.floor(rise))
    first, frac = whole + lay.pad, rise - whole
    low = table[first : first + rows]
    if frac < _NEGLIGIBLE:
        return low
    return cv2.addWeighted(low, 1 - frac, table[first + 1 : first + 1 + rows], frac, 0)


def _over(region: np.ndarray, layer: np.ndarray) -> None:
    """region = layer over region, in place: uint8 RGB region, uint8 premultiplied RGBA layer."""
    clear = cv2.bitwise_not(cv2.extractChannel(layer, 3))
    cv2.multiply(region, cv2.merge((clear, clear, clear)), dst=region, scale=1 / 255)
    cv2.add(region, cv2.cvtColor(layer, cv2.COLOR_RGBA2RGB), dst=region)
