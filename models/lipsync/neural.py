"""Neural lip-sync: the Wav2Lip family redraws the mouth of real frames from the audio they air with.

A pack (photo: one frame; video: a few seconds of the person, looped forwards and back) gives the
frames and a face box per frame. For a batch of frames of any channels:
  audio   each frame's window (0.2 s from its own time, plus the STFT's reach) -> mel, one call;
  faces   each frame's face crop at the network's size (96 or 256), lower half masked, + itself;
  network one call for the voiced frames (float16 autocast and channels_last on CUDA);
  paste   the generated crops back over their boxes with a feathered mask over the lower face,
          one batched grid_sample: pixels outside the mask are the pack's own;
  I420    converted on the device and copied once into the frames' ring memory.
Frames whose window is silent skip the network: the pack frame airs as it is. On a GPU, a failure
(out of memory, a device error) draws that batch as the pack's idle frames, is logged, and the
network is tried again after RETRY_AFTER_S: the picture never freezes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.avatars import PackError, pack_kind
from models.faces.photo_pack import PhotoPack
from models.faces.video_pack import VideoPack, loop_index
from models.lipsync.i420 import copy_to_host, rgb_to_i420
from models.lipsync.mel import FRAME_WINDOW, frame_mel_windows
from models.lipsync.wav2lip_checkpoint import Architecture, load_wav2lip

log = logging.getLogger(__name__)

NETWORK_SIZE = {"wav2lip": 96, "wav2lip256": 256}
SILENT = 64
"""A frame's window quieter than this (|int16| peak) is silence: the pack frame airs unchanged."""
RETRY_AFTER_S = 5.0
CHIN_PAD = 10 / 512
"""Upstream pads the detector's box 10 px below the chin (at its 512-ish frames); as a share of the frame."""


@dataclass(eq=False)
class NeuralFace:
    """A photo or video pack ready for the network at one frame size (a PreparedFace)."""

    kind: str
    size: tuple[int, int]
    mouth_box: tuple[int, int, int, int]
    still: np.ndarray  # RGB of the first frame
    frames: torch.Tensor  # (N, 3, H, W) float RGB 0..255 on the device
    boxes: torch.Tensor  # (N, 4) float face boxes x0, y0, x1, y1 in frame pixels
    crops: torch.Tensor  # (N, 3, S, S) float BGR 0..1: the network's view of each frame's face
    audio_window: int = FRAME_WINDOW
    """16 kHz samples of audio each frame is rendered from (the ring carries them, int16)."""


def feathered_mask(size: int) -> torch.Tensor:
    """(S, S) weights: 1 over the lower face (mouth, jaw), fading to 0 at the crop's edges and above the
    nose, so the pasted mouth blends into the real frame without a seam."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    rows = ((t - 0.45) / 0.15).clamp(0, 1) * ((1.0 - t) / 0.06).clamp(0, 1)
    cols = (t / 0.1).clamp(0, 1) * ((1.0 - t) / 0.1).clamp(0, 1)
    weight = rows[:, None] * cols[None, :]
    return weight * weight * (3 - 2 * weight)  # smoothstep: no visible edge


class Wav2LipRenderer:
    kind = "wav2lip"

    def __init__(self, device: torch.device | str, arch: Architecture, checkpoint: Path) -> None:
        self.device = torch.device(device)
        self.arch = arch
        self.net = load_wav2lip(checkpoint, arch, self.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.crop_size = NETWORK_SIZE[arch]
        self.mask = feathered_mask(self.crop_size).to(self.device)
        self._idle_until = 0.0  # after a device failure: pack frames only until then
        self.failures = 0

    # ------------------------------------------------------------------ preparing
    def prepare(self, pack_dir: Path, size: tuple[int, int]) -> NeuralFace:
        kind = pack_kind(pack_dir)
        if kind == "video":
            pack = VideoPack.load(pack_dir)
            frames, boxes = pack.frames, pack.boxes.astype(np.float64)
        elif kind == "photo":
            photo = PhotoPack.load(pack_dir)
            oval = photo.regions["face_oval"]
            frames = photo.image[None]
            boxes = np.array([[*oval.min(0), *oval.max(0)]], np.float64)
        else:
            raise PackError(f"{pack_dir}: a {kind} pack has no real face for {self.arch}; use a photo or video pack")
        frames, boxes = _fit(frames, boxes, size)
        boxes[:, 3] += CHIN_PAD * size[1]
        boxes = np.round(boxes).clip(0, [size[0] - 1, size[1] - 1, size[0], size[1]])  # whole pixels: crop = paste
        crops = np.stack([_crop(frame, box, self.crop_size) for frame, box in zip(frames, boxes, strict=True)])
        x0, y0, x1, y1 = boxes[0]
        mouth = (int(x0), int(y0 + 0.55 * (y1 - y0)), int(np.ceil(x1)), int(np.ceil(y1)))
        return NeuralFace(
            kind=self.kind,
            size=size,
            mouth_box=mouth,
            still=frames[0].copy(),
            frames=torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float(),
            boxes=torch.from_numpy(boxes.astype(np.float32)).to(self.device),
            crops=torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float().div_(255),
        )

    # ------------------------------------------------------------------ rendering
    def render_i420(
        self,
        faces: Sequence[NeuralFace],
        params: np.ndarray,
        into: Sequence[np.ndarray],
        *,
        frames: np.ndarray | None = None,
        audio: Sequence[np.ndarray] | None = None,
    ) -> None:
        """faces[i] at timeline frame frames[i], its mouth from audio[i] -> into[i] as I420 (FaceRenderer)."""
        with torch.inference_mode():
            copy_to_host(rgb_to_i420(self._draw(faces, frames, audio)), into)

    def render_rgb(
        self,
        faces: Sequence[NeuralFace],
        params: np.ndarray,
        *,
        frames: np.ndarray | None = None,
        audio: Sequence[np.ndarray] | None = None,
    ) -> np.ndarray:
        with torch.inference_mode():
            drawn = self._draw(faces, frames, audio)
            return drawn.add(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def calibration(self, face: NeuralFace, n: int) -> dict[str, object]:
        """Extras that make a batch cost what a talking one does (admission prices the network)."""
        rng = np.random.default_rng(0)
        voiced = [(rng.standard_normal(FRAME_WINDOW) * 3000).astype(np.int16) for _ in range(n)]
        return {"frames": np.arange(n), "audio": voiced}

    def _draw(
        self, faces: Sequence[NeuralFace], numbers: np.ndarray | None, audio: Sequence[np.ndarray] | None
    ) -> torch.Tensor:
        """(B, 3, H, W) float RGB 0..255 on the device."""
        if not faces or len({f.size for f in faces}) != 1:
            raise ValueError("one call renders one frame size, and at least one frame")
        numbers = np.zeros(len(faces), np.int64) if numbers is None else np.asarray(numbers, np.int64)
        with torch.inference_mode():
            index = [loop_index(int(n), len(f.frames)) for f, n in zip(faces, numbers, strict=True)]
            base = torch.stack([f.frames[i] for f, i in zip(faces, index, strict=True)])
            voiced = [] if audio is None else [i for i, a in enumerate(audio) if np.abs(a).max(initial=0) >= SILENT]
            if not voiced or time.monotonic() < self._idle_until:
                return base
            assert audio is not None
            windows = torch.from_numpy(np.stack([audio[i] for i in voiced]).astype(np.float32) / 32768)
            crops = torch.stack([faces[i].crops[index[i]] for i in voiced])
            boxes = torch.stack([faces[i].boxes[index[i]] for i in voiced])
            try:
                mouths = self._network(windows.to(self.device), crops)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if not self.cuda:
                    raise
                self.failures += 1
                self._idle_until = time.monotonic() + RETRY_AFTER_S
                log.error("%s failed on %s (%s); idle frames for %.0f s", self.arch, self.device, exc, RETRY_AFTER_S)
                return base
            chosen = torch.tensor(voiced, device=self.device)
            base[chosen] = self._paste(base[chosen], mouths, boxes)
            return base

    def _network(self, audio16k: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        """(V, FRAME_WINDOW) audio, (V, 3, S, S) BGR crops -> (V, 3, S, S) RGB 0..255 generated faces."""
        mel = frame_mel_windows(audio16k)
        masked = crops.clone()
        masked[:, :, self.crop_size // 2 :] = 0
        faces = torch.cat((masked, crops), dim=1)
        if self.cuda:
            faces = faces.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16):
                out = self.net(mel, faces)
        else:
            out = self.net(mel, faces)
        return out.float().flip(1).mul_(255)  # BGR -> RGB

    def _paste(self, frames: torch.Tensor, mouths: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The generated crops over their boxes, through the feathered mask (one grid_sample for all)."""
        v, _, height, width = frames.shape
        xs = torch.arange(width, device=self.device, dtype=torch.float32) + 0.5
        ys = torch.arange(height, device=self.device, dtype=torch.float32) + 0.5
        gx = (xs[None] - boxes[:, 0:1]) / (boxes[:, 2:3] - boxes[:, 0:1]) * 2 - 1  # (V, W)
        gy = (ys[None] - boxes[:, 1:2]) / (boxes[:, 3:4] - boxes[:, 1:2]) * 2 - 1  # (V, H)
        grid = torch.stack((gx[:, None, :].expand(v, height, width), gy[:, :, None].expand(v, height, width)), -1)
        layers = torch.cat((mouths, self.mask.expand(v, 1, -1, -1)), dim=1)
        pasted = F.grid_sample(layers, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        alpha = pasted[:, 3:]
        return frames * (1 - alpha) + pasted[:, :3] * alpha


def _fit(frames: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pack frames (N, h, w, 3) scaled and centre-cropped to `size`, boxes along."""
    width, height = size
    h0, w0 = frames.shape[1:3]
    if (w0, h0) == (width, height):
        return frames, boxes.copy()
    scale = max(width / w0, height / h0)
    ox, oy = (round(w0 * scale) - width) // 2, (round(h0 * scale) - height) // 2
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    out = np.stack(
        [cv2.resize(f, (round(w0 * scale), round(h0 * scale)), interpolation=interpolation) for f in frames]
    )[:, oy : oy + height, ox : ox + width]
    return np.ascontiguousarray(out), boxes * scale - np.array([ox, oy, ox, oy], np.float64)


def _crop(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The box of an RGB frame as the network sees it: BGR, size x size (upstream resizes the box)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    return cv2.resize(frame[y0:y1, x0:x1, ::-1], (size, size), interpolation=cv2.INTER_AREA)
