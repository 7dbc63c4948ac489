"""Rendered frames in the encoder's own format: I420 (yuv420p), made on the device, copied once.

x264 takes yuv420p. Converting on the device halves what crosses to the host (1.5 bytes a pixel
instead of 3) and takes the per-frame RGB -> I420 conversion off the CPU. The batch converts in a
fixed number of tensor calls; each run of frames that lies back to back in host memory (consecutive
slots of a FrameRing) is one copy, non-blocking into pinned memory, with one synchronisation per
batch.

Layout of a frame: a uint8 array of (height * 3 // 2, width) rows: the Y plane (height rows),
then U and then V, each (height / 2) x (width / 2), packed. BT.601 limited range, as OpenCV's
COLOR_RGB2YUV_I420 and x264's default; chroma is the mean of each 2 x 2 block.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# BT.601, limited range (Y 16..235, U and V 16..240), for RGB in 0..255
_COEFFICIENTS = (
    (0.25679, 0.50413, 0.09791),
    (-0.14822, -0.29099, 0.43922),
    (0.43922, -0.36779, -0.07143),
)
_OFFSETS = (16.0, 128.0, 128.0)


def i420_rows(height: int) -> int:
    """Rows of an I420 frame of `height` (even) rows of pixels."""
    return height * 3 // 2


def rgb_to_i420(rgb: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) RGB in 0..255 (H and W even) -> uint8 (B, H * 3 // 2, W) I420 on the same device."""
    batch, _, height, width = rgb.shape
    coefficients = torch.tensor(_COEFFICIENTS, dtype=rgb.dtype, device=rgb.device)
    offsets = torch.tensor(_OFFSETS, dtype=rgb.dtype, device=rgb.device)
    luma = torch.einsum("c,bchw->bhw", coefficients[0], rgb).add_(offsets[0] + 0.5)
    chroma = torch.einsum("kc,bchw->bkhw", coefficients[1:], F.avg_pool2d(rgb, 2))
    chroma.add_(offsets[1:, None, None] + 0.5)
    out = torch.empty(batch, height * width * 3 // 2, dtype=torch.uint8, device=rgb.device)
    pixels = height * width
    out[:, :pixels] = luma.clamp_(0, 255).flatten(1)  # float -> uint8 truncates: +0.5 rounds
    out[:, pixels:] = chroma.clamp_(0, 255).flatten(1)
    return out.view(batch, height * 3 // 2, width)


def copy_to_host(frames: torch.Tensor, into: Sequence[np.ndarray]) -> None:
    """frames[i] -> into[i] (host arrays of the same shape), then wait once for the copies.

    Frames whose host arrays lie back to back go in one copy; on CUDA the copies are non-blocking
    (DMA when the memory is pinned) and the batch synchronises once, at the end.
    """
    if len(into) != len(frames):
        raise ValueError(f"{len(frames)} frames for {len(into)} destinations")
    non_blocking = frames.device.type == "cuda"
    for start, count in _runs(into):
        host = torch.from_numpy(_span(into[start], count))
        host.copy_(frames[start : start + count], non_blocking=non_blocking)
    if non_blocking:
        torch.cuda.current_stream(frames.device).synchronize()


def _runs(into: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """(first index, count) of the runs of destinations that follow each other in memory."""
    runs: list[tuple[int, int]] = []
    for i, frame in enumerate(into):
        if not frame.flags.c_contiguous:
            raise ValueError("a destination frame must be C-contiguous")
        if runs:
            first, count = runs[-1]
            end = into[first].__array_interface__["data"][0] + count * into[first].nbytes
            if frame.__array_interface__["data"][0] == end and frame.shape == into[first].shape:
                runs[-1] = (first, count + 1)
                continue
        runs.append((i, 1))
    return runs


def _span(first: np.ndarray, count: int) -> np.ndarray:
    """`count` frames starting at `first`, as one array (valid while those frames are held)."""
    if count == 1:
        return first[None]
    raw = (ctypes.c_uint8 * (first.nbytes * count)).from_address(first.__array_interface__["data"][0])
    return np.frombuffer(raw, np.uint8).reshape(count, *first.shape)
