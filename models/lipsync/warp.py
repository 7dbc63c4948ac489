"""Photo avatars: the user's photo warped with torch `grid_sample`, many channels per call.

Every frame is one sampling grid over the pack image:
  head   sway and tilt about the neck (idle motion), the body rising with breathing, blended
         across the neck so the shoulders stay put while the head moves;
  local  offsets around the mouth and eyes from the per-photo maps (warp_fields.py): jaw,
         lip width, rounding, blinks; looked up at the swayed position so they stay glued to
         the features.
Where the jaw opens the lips, an inner mouth is painted (dark cavity, upper teeth, tongue).

Frames of several photos render in ONE grid_sample: the batch's photos are stacked into an
atlas (and their maps into another) and every frame's grid points into its own photo.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.faces.photo_pack import PhotoPack
from models.lipsync.i420 import copy_to_host, rgb_to_i420
from models.lipsync.params import BLINK, BREATH, HEAD_DX, HEAD_DY, HEAD_TILT, JAW, N_PARAMS, ROUND, WIDTH
from models.lipsync.warp_fields import KX, KY, M0, M1, N_CHANNELS, RX, RY, WX, WY, FaceFields, L, U, build_fields

BREATH_LIFT = 0.005  # of the frame height, at breath = 1
CPU_CHUNK = 8
"""On CPU a batch is sampled 8 frames per call: its full-frame grids then stay in cache (a batch of
32 in one call ran at half the speed). On CUDA the whole batch is one call."""
ATLAS_PAD = 24  # rows; more than sway and tilt ever move a sample
CAVITY = (0.20, 0.06, 0.07)
TONGUE = (0.55, 0.24, 0.26)
TEETH = (0.88, 0.86, 0.80)


@dataclass(eq=False)
class WarpFace:
    kind: str
    size: tuple[int, int]
    mouth_box: tuple[int, int, int, int]
    still: np.ndarray
    image: torch.Tensor  # float32 (3, H, W), 0..1
    fields: FaceFields
    maps: torch.Tensor  # float32 (N_CHANNELS, wh, ww)
    scalars: torch.Tensor  # (pivot_x, pivot_y, neck_top, neck_bottom, half_width, down_x, down_y)


def _fit(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Scale (and centre-crop, if the aspect differs) the pack image to `size`, landmarks along."""
    w, h = size
    h0, w0 = image.shape[:2]
    if (w0, h0) == (w, h):
        return image, landmarks
    s = max(w / w0, h / h0)
    interpolation = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (round(w0 * s), round(h0 * s)), interpolation=interpolation)
    ox, oy = (resized.shape[1] - w) // 2, (resized.shape[0] - h) // 2
    lm = landmarks.copy()
    lm[:, :2] = lm[:, :2] * s - np.array([ox, oy])
    lm[:, 2] *= s
    return np.ascontiguousarray(resized[oy : oy + h, ox : ox + w]), lm


class WarpRenderer:
    kind = "photo"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._atlas_cache: tuple[tuple[WarpFace, ...], tuple] = ((), ())

    def prepare(self, pack_dir: Path, size: tuple[int, int]) -> WarpFace:
        pack = PhotoPack.load(pack_dir)
        image, landmarks = _fit(pack.image, pack.landmarks, size)
        fields = build_fields(landmarks, size)
        x0, _, x1, _ = fields.mouth_box
        chin, face_h = fields.chin_y, fields.face_height
        scalars = [
            (x0 + x1) / 2, chin + 0.3 * face_h, chin + 0.12 * face_h, chin + 0.6 * face_h,
            fields.half_width, *fields.mouth_down,
        ]  # fmt: skip
        face = WarpFace(
            kind="photo",
            size=size,
            mouth_box=fields.mouth_box,
            still=image.copy(),
            image=torch.from_numpy(image).to(self.device).permute(2, 0, 1).float().div(255),
            fields=fields,
            maps=torch.from_numpy(fields.maps).to(self.device),
            scalars=torch.tensor(scalars, dtype=torch.float32, device=self.device),
        )
        face.still = self.render_rgb([face], np.zeros((1, N_PARAMS), np.float32))[0]
        return face

    # ------------------------------------------------------------------ batch rendering
    def _atlas(self, faces: list[WarpFace]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Images and maps of the batch's distinct photos, stacked (kept while the set is the same).

        Each image gets ATLAS_PAD replicated rows above and below, so a grid that strays a few
        pixels past its photo's edge reads that photo's edge, not the neighbour's.
        """
        cached_faces, cached = self._atlas_cache
        if len(cached_faces) == len(faces) and all(a is b for a, b in zip(cached_faces, faces, strict=True)):
            return cached
        wh = max(f.maps.shape[1] for f in faces)
        ww = max(f.maps.shape[2] for f in faces)
        padded = [F.pad(f.image[None], (0, 0, ATLAS_PAD, ATLAS_PAD), mode="replicate")[0] for f in faces]
        images = torch.cat(padded, dim=1)[None]
        maps = torch.cat([F.pad(f.maps, (0, ww - f.maps.shape[2], 0, wh - f.maps.shape[1])) for f in faces], 1)[None]
        result = (images, maps, (wh, ww))
        self._atlas_cache = (tuple(faces), result)
        return result

    def render_rgb(self, faces: Sequence[WarpFace], params: np.ndarray) -> np.ndarray:
        """faces[i] posed by params[i] -> uint8 (B, H, W, 3) RGB: the reference picture (tests, stills)."""
        out = np.empty((len(faces), faces[0].size[1], faces[0].size[0], 3), np.uint8) if faces else None
        for part, frames in self._chunks(faces, params):
            rgb = frames.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            out[part] = rgb.cpu().numpy()
        return out

    def render_i420(
        self, faces: Sequence[WarpFace], params: np.ndarray, into: Sequence[np.ndarray], **_: object
    ) -> None:
        """faces[i] posed by params[i] -> into[i] as I420 (FaceRenderer.render_i420). On a GPU the conversion
        runs there and only I420 crosses to the host; on a CPU OpenCV's SIMD conversion of each uint8 frame
        is ~2x cheaper than the same float tensor arithmetic."""
        if self.device.type != "cpu":
            for part, frames in self._chunks(faces, params):
                copy_to_host(rgb_to_i420(frames.mul_(255)), into[part])
            return
        for i, rgb in enumerate(self.render_rgb(faces, params)):
            cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420, dst=into[i])

    def _chunks(self, faces: Sequence[WarpFace], params: np.ndarray) -> Iterator[tuple[slice, torch.Tensor]]:
        """(which frames, float (b, 3, H, W) RGB in 0..1 on the device): the batch at once on a GPU,
        CPU_CHUNK frames at a time on a CPU."""
        if not faces or len(faces) != len(params) or params.ndim != 2 or params.shape[1] != N_PARAMS:
            raise ValueError(f"need one (N_PARAMS={N_PARAMS}) row per face, got {params.shape} for {len(faces)} faces")
        sizes = {f.size for f in faces}
        if len(sizes) != 1:
            raise ValueError(f"one call renders one frame size, got {sorted(sizes)}")
        distinct = list(dict.fromkeys(faces))
        index = {id(f): i for i, f in enumerate(distinct)}
        step = CPU_CHUNK if self.device.type == "cpu" else len(faces)
        with torch.inference_mode():
            which = torch.tensor([index[id(f)] for f in faces], device=self.device)
            p = torch.from_numpy(np.ascontiguousarray(params, np.float32)).to(self.device)
            for i in range(0, len(faces), step):
                yield slice(i, i + step), self._render(distinct, which[i : i + step], p[i : i + step])

    def _render(self, distinct: list[WarpFace], which: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        w, h = distinct[0].size
        n_faces, batch, dev = len(distinct), len(which), self.device
        images, maps, (wh, ww) = self._atlas(distinct)
        sc = torch.stack([f.scalars for f in distinct])[which]  # (B, 7)
        windows = torch.tensor([f.fields.window[:2] for f in distinct], device=dev)[which]  # (B, 2)
        origins = torch.minimum(windows, torch.tensor([w - ww, h - wh], device=dev).clamp(min=0))
        xs = torch.arange(w, device=dev, dtype=torch.float32) + 0.5
        ys = torch.arange(h, device=dev, dtype=torch.float32) + 0.5

        # ---- head sway / tilt about the neck and breathing, blended across the neck. Per row
        # the map is affine in x: source = (A x + C, D x + E) with A, C, D, E of shape (B, H).
        px, py = sc[:, 0, None], sc[:, 1, None]
        tx, ty = px + (p[:, HEAD_DX] * w)[:, None], py + (p[:, HEAD_DY] * h)[:, None]
        cos, sin = torch.cos(p[:, HEAD_TILT])[:, None], torch.sin(p[:, HEAD_TILT])[:, None]
        lift = (p[:, BREATH] * BREATH_LIFT * h)[:, None]
        t = ((ys[None] - sc[:, 2, None]) / (sc[:, 3, None] - sc[:, 2, None])).clamp(0, 1)
        head = 1 - t * t * (3 - 2 * t)  # 1 above the neck, 0 on the shoulders
        a_ = head * cos + (1 - head)
        c_ = head * (sin * (ys[None] - ty) + px - cos * tx)
        d_ = -head * sin
        e_ = head * (sin * tx + cos * (ys[None] - ty) + py + 0.4 * lift) + (1 - head) * (ys[None] + lift)

        # ---- one grid over every frame, in atlas coordinates
        row0 = (which.float() * (h + 2 * ATLAS_PAD) + ATLAS_PAD)[:, None]
        sx, sy = 2 / w, 2 / (n_faces * (h + 2 * ATLAS_PAD))
        grid = torch.empty(batch, h, w, 2, device=dev)
        torch.addcmul((c_ * sx - 1)[..., None], (a_ * sx)[..., None], xs, out=grid[..., 0])
        torch.addcmul(((e_ + row0) * sy - 1)[..., None], (d_ * sy)[..., None], xs, out=grid[..., 1])

        # ---- local maps around mouth and eyes, looked up where each window pixel samples from
        b = torch.arange(batch, device=dev)[:, None, None]
        rows = origins[:, 1, None] + torch.arange(wh, device=dev)  # (B, wh)
        cols = origins[:, 0, None] + torch.arange(ww, device=dev)  # (B, ww)
        wx = cols[:, None, :].float() + 0.5
        qx = a_.gather(1, rows)[..., None] * wx + c_.gather(1, rows)[..., None]  # (B, wh, ww) source pixels
        qy = d_.gather(1, rows)[..., None] * wx + e_.gather(1, rows)[..., None]
        lx, ly = qx - windows[:, 0, None, None], qy - windows[:, 1, None, None]
        inside = ((lx >= 0) & (lx < ww) & (ly >= 0) & (ly < wh)).float()
        my = (ly.clamp(0, wh - 0.5) + which.float()[:, None, None] * wh) / (n_faces * wh) * 2 - 1
        lookup = torch.stack([lx / ww * 2 - 1, my], -1).reshape(1, batch * wh, ww, 2)
        fm = F.grid_sample(maps, lookup, align_corners=False).reshape(N_CHANNELS, batch, wh, ww)
        fm = fm.permute(1, 0, 2, 3) * inside[:, None]
        pose = p[:, :, None, None]
        opening = fm[:, M0] + pose[:, JAW] * fm[:, M1]
        off_x = -opening * sc[:, 5, None, None] + pose[:, WIDTH] * fm[:, WX] + pose[:, ROUND] * fm[:, RX]
        off_y = -opening * sc[:, 6, None, None] + pose[:, WIDTH] * fm[:, WY] + pose[:, ROUND] * fm[:, RY]
        off_x = off_x + pose[:, BLINK] * fm[:, KX]
        off_y = off_y + pose[:, BLINK] * fm[:, KY]
        r_idx, c_idx = rows[:, :, None], cols[:, None, :]
        local = torch.stack([(qx + off_x) * sx - 1, (qy + off_y + row0[:, :, None]) * sy - 1], -1)
        grid[b, r_idx, c_idx] = local

        # ---- one sampling call for every frame of every photo
        out = F.grid_sample(images, grid.view(1, batch * h, w, 2), align_corners=False, padding_mode="border")
        out = out.view(3, batch, h, w).permute(1, 0, 2, 3)

        # ---- inner mouth where the lips opened
        out[b, :, r_idx, c_idx] = self._inner_mouth(out[b, :, r_idx, c_idx], fm, opening, sc[:, 4, None, None])
        return out

    @staticmethod
    def _inner_mouth(pixels: torch.Tensor, fm: torch.Tensor, opening: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Paint the cavity, teeth and tongue into the opening (0 < L < jaw offset)."""
        depth_from_lip = fm[:, L]
        mask = torch.sigmoid(depth_from_lip / 0.5) * torch.sigmoid((opening - depth_from_lip) / 0.5)
        mask = mask * (opening > 0.5)
        rel = (depth_from_lip / opening.clamp(min=1.0)).clamp(0, 1)
        across = fm[:, U].abs()
        tone = (1 - 0.45 * across) * (1 - 0.25 * rel)
        color = pixels.new_tensor(CAVITY) * tone[..., None]
        tongue = (torch.sigmoid((rel - 0.72) / 0.1) * (1 - across**2) * (opening / a).clamp(0, 1)).unsqueeze(-1)
        color = color * (1 - tongue) + pixels.new_tensor(TONGUE) * (tone[..., None] * tongue)
        teeth_h = (0.3 * opening).clamp(max=0.22 * a)
        teeth = torch.sigmoid((teeth_h - depth_from_lip) / 0.6) * (1 - across**4)
        color = color * (1 - teeth[..., None]) + pixels.new_tensor(TEETH) * ((1 - 0.25 * across) * teeth)[..., None]
        m = mask[..., None]
        return pixels * (1 - m) + color * m
