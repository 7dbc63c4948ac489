"""The sprite kernel for GPUs: a whole batch of frames (any channels, any packs) in float32 tensor calls.

Mouth and eye drawings are mixed with one matrix product for the batch, pasted into copies of the
head group, warped with one batched `grid_sample` and laid over the background with the breathing
body. On a CUDA device a batch costs little more than one frame; on a CPU the OpenCV kernel
(sprite_opencv.py) is ~6x cheaper, and a test holds the two to the same picture.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from models.lipsync.sprite_pose import (
    Box,
    SpriteLayout,
    body_rise,
    eye_weights,
    head_affine,
    mouth_weights,
    warp_region,
)

_CPU_CHUNK_BYTES = 8 << 20
"""On CPU a batch renders in chunks whose intermediates stay this small: they stay in cache, and glibc
serves them from its heap. Blocks of 32 MiB and more are fresh mmaps whose page faults cost more
than the blending done in them."""


class TensorLayers(Protocol):
    """A prepared sprite face's float layers on the device (models/lipsync/sprite.py SpriteFace)."""

    layout: SpriteLayout
    background: torch.Tensor  # (H, W, 3) uint8
    head: torch.Tensor  # (4, h, w)
    mouths: torch.Tensor  # (11, 4 * mouth pixels)
    eyes: torch.Tensor  # (3, 4 * eye pixels)
    body: torch.Tensor  # (rows, 4 * width)


def render_tensor_chunks(
    lay: SpriteLayout, faces: Sequence[TensorLayers], params: np.ndarray, device: torch.device
) -> Iterator[tuple[slice, torch.Tensor]]:
    """faces[i] posed by params[i], for faces sharing `lay` -> (which frames, uint8 (b, H, W, 3) RGB on
    the device): the whole batch at once on a GPU, cache-sized chunks on a CPU."""
    x0, y0, x1, y1 = lay.head
    step = len(faces)
    if device.type == "cpu":  # its largest intermediate: float32 RGBA head groups
        step = max(1, _CPU_CHUNK_BYTES // (16 * (x1 - x0) * (y1 - y0)))
    for start in range(0, len(faces), step):
        part = slice(start, start + step)
        yield part, _render_group(faces[part], params[part], device)


def _render_group(faces: Sequence[TensorLayers], params: np.ndarray, device: torch.device) -> torch.Tensor:
    """Frames of faces sharing one layout -> uint8 (B, H, W, 3) on the device."""
    lay = faces[0].layout
    unique = list({id(f): f for f in faces}.values())
    slots = {id(f): i for i, f in enumerate(unique)}
    slot = torch.tensor([slots[id(f)] for f in faces], device=device)

    def table(name: str) -> torch.Tensor:
        """The batch's distinct faces' tensors stacked (a view for one face), to index by `slot`."""
        tensors = [getattr(f, name) for f in unique]
        return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(device)

    head = table("head").index_select(0, slot)  # index_select copies slices whole; [slot] is far slower
    _paste(head, lay.mouth, _blend(table("mouths"), slot, tensor(mouth_weights(params))))
    _paste(head, lay.eyes, _blend(table("eyes"), slot, tensor(eye_weights(params))))
    reach = warp_region(lay, params)
    grid = _warp_grid(lay, reach, tensor(head_affine(lay, reach, params)))
    head = F.grid_sample(head, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = table("background").index_select(0, slot)
    _composite(out, reach, head)
    _composite(out, lay.body, _shift_body(table("body"), slot, lay, tensor(body_rise(lay, params))))
    return out


def _blend(table: torch.Tensor, slot: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(U, n, C) drawings of the batch's distinct faces, (B, n) weights -> (B, C) mixed drawings.

    One matrix product for the whole batch: a frame's row of the mixing matrix holds its weights in
    its own face's block and zeros elsewhere."""
    n = table.shape[1]
    mix = torch.zeros(len(slot), table.shape[0] * n, device=table.device)
    mix.scatter_(1, slot[:, None] * n + torch.arange(n, device=table.device), weights)
    return mix @ table.flatten(0, 1)


def _paste(head: torch.Tensor, box: Box, flat: torch.Tensor) -> None:
    x0, y0, x1, y1 = box
    head[:, :, y0:y1, x0:x1] = flat.view(len(flat), 4, y1 - y0, x1 - x0)


def _warp_grid(lay: SpriteLayout, region: Box, affine: torch.Tensor) -> torch.Tensor:
    """grid_sample grid: for each pixel of `region`, where it comes from in the head crop, from the
    (B, 2, 3) inverse maps of sprite_pose.head_affine."""
    hx0, hy0, hx1, hy1 = lay.head
    i = torch.arange(region[2] - region[0], dtype=torch.float32, device=affine.device)[None, None, :]
    j = torch.arange(region[3] - region[1], dtype=torch.float32, device=affine.device)[None, :, None]
    m = affine[:, :, :, None, None]
    sx, sy = (m[:, r, 0] * i + m[:, r, 1] * j + m[:, r, 2] for r in (0, 1))
    # source pixel centre c lies at normalised (2c + 1) / size - 1 (align_corners=False)
    return torch.stack(((2 * sx + 1) / (hx1 - hx0) - 1, (2 * sy + 1) / (hy1 - hy0) - 1), dim=-1)


def _shift_body(table: torch.Tensor, slot: torch.Tensor, lay: SpriteLayout, rise: torch.Tensor) -> torch.Tensor:
    """The body region with the body raised by `rise` pixels, sub-pixel (linear between rows)."""
    x0, y0, x1, y1 = lay.body
    whole = torch.floor(rise)
    first = whole.long() + lay.pad + slot * table.shape[1]  # each frame's first row in the flat table
    rows = (first[:, None] + torch.arange(y1 - y0, device=rise.device)).flatten()
    flat = table.flatten(0, 1)
    low, high = (flat.index_select(0, r).view(len(slot), y1 - y0, 4, x1 - x0) for r in (rows, rows + 1))
    return torch.lerp(low, high, (rise - whole)[:, None, None, None]).permute(0, 2, 1, 3)


def _composite(frames: torch.Tensor, box: Box, layer: torch.Tensor) -> None:
    """frames[box] = layer over frames[box], in place: uint8 (B, H, W, 3) frames, (B, 4, h, w) layer."""
    x0, y0, x1, y1 = box
    region = frames[:, y0:y1, x0:x1]
    mixed = region.permute(0, 3, 1, 2).float().mul_(1 - layer[:, 3:]).add_(layer[:, :3])
    region.copy_(mixed.add_(0.5).clamp_(0, 255).permute(0, 2, 3, 1))  # the float -> uint8 copy truncates
