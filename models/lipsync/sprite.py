"""The drawn default avatar: SVG layers rasterised once per channel, posed per frame by a kernel.

A frame of the drawn character differs from its neutral frame only in which mouth and eye drawings
show and where the head group and the body sit. So `prepare` rasterises every layer once and
pre-composites each mouth and eye drawing, with the head below and the front hair above it, into a
small box crop; `render` then only blends crops, pastes them into the head group, warps that and
shifts the body. Two kernels draw the same picture (sprite_pose.py holds the geometry both use):

- "torch": float32 tensor work over a whole batch of frames (any channels, any packs) in one call,
  one batched `grid_sample` (sprite_torch.py); the kernel for CUDA, where a batch amortises the
  launches.
- "opencv": uint8 frame by frame with SIMD warps (sprite_opencv.py); the kernel for CPUs, ~5x
  cheaper there than the tensor one.

Colours are premultiplied and kept 0..255 (alpha 0..1 in the float layers), so "over" is one
multiply-add and the result needs no rescale before it becomes uint8.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import resvg_py
import torch

from models.avatars import PackError, read_manifest
from models.lipsync.i420 import copy_to_host, rgb_to_i420
from models.lipsync.params import N_PARAMS, neutral
from models.lipsync.sprite_opencv import CpuSprite, render_frames, render_frames_i420
from models.lipsync.sprite_pose import Box, SpriteLayout
from models.lipsync.sprite_torch import render_tensor_chunks
from models.lipsync.visemes import Viseme

MOUTH_NAMES = tuple(v.name.lower() for v in Viseme)
"""The keys of pack.json `layers.mouths`, in Viseme order: one drawing per viseme class."""
EYE_STATES = ("open", "half", "closed")
"""The keys of pack.json `layers.eyes`; blink 0, 0.5 and 1 show each unmixed."""
_SVG = "{http://www.w3.org/2000/svg}svg"


@dataclass(eq=False)
class SpriteFace:
    """A sprite pack ready for one frame size on one device (a PreparedFace)."""

    kind: str
    size: tuple[int, int]
    mouth_box: Box
    eyes_box: Box
    still: np.ndarray
    layout: SpriteLayout
    background: torch.Tensor  # (H, W, 3) uint8: the frame wherever nothing moves
    head: torch.Tensor  # (4, h, w) head group with neither eyes nor mouth
    mouths: torch.Tensor  # (11, 4 * mouth pixels): the head-group crop under each mouth drawing
    eyes: torch.Tensor  # (3, 4 * eye pixels): the same for open, half and closed eyes
    body: torch.Tensor  # (rows, 4 * width): body rows, padded for the breathing shift
    cpu: CpuSprite | None  # the same layers in uint8 for the OpenCV kernel (faces on the CPU)

    def over_flat(self, rgb: tuple[int, int, int]) -> SpriteFace:
        """The same character over a flat colour (a chroma key background), its still not yet redrawn."""
        flat = torch.tensor(rgb, dtype=torch.uint8, device=self.background.device).expand_as(self.background)
        cpu = None if self.cpu is None else dataclasses.replace(self.cpu, background=flat.cpu().numpy().copy())
        return dataclasses.replace(self, background=flat.contiguous(), cpu=cpu)


KERNELS = ("auto", "torch", "opencv")
"""auto: opencv on the CPU, torch on any other device."""


class SpriteRenderer:
    """Renders sprite packs (the project's drawn characters); implements FaceRenderer."""

    kind = "sprite"

    def __init__(self, device: torch.device | str = "cpu", kernel: str = "auto") -> None:
        self.device = torch.empty(0, device=device).device  # canonical form, e.g. cuda -> cuda:0
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
        if kernel == "opencv" and self.device.type != "cpu":
            raise ValueError(f"the opencv kernel renders on the CPU, not on {self.device}")
        self.kernel = ("opencv" if self.device.type == "cpu" else "torch") if kernel == "auto" else kernel

    def prepare(self, pack_dir: Path, size: tuple[int, int]) -> SpriteFace:
        """Rasterise the pack at `size`. Any size: the square art is scaled to fit the shorter side,
        and its background and body reach out to fill the longer one."""
        width, height = _check_size(size)
        spec = _PackSpec.read(Path(pack_dir))
        scale = min(width, height) / spec.canvas
        vx, vy = (spec.canvas - width / scale) / 2, (spec.canvas - height / scale) / 2

        def raster(name: str, pad: int = 0) -> np.ndarray:
            view = (vx, vy - pad / scale, width / scale, (height + 2 * pad) / scale)
            return _rasterise(spec.files[name], spec.canvas, view, width, height + 2 * pad)

        def to_px(box: tuple[float, ...]) -> Box:
            x0, y0 = math.floor((box[0] - vx) * scale), math.floor((box[1] - vy) * scale)
            x1, y1 = math.ceil((box[2] - vx) * scale), math.ceil((box[3] - vy) * scale)
            return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)

        head, hair = raster("head"), raster("hair")

        def crops(names: Sequence[str], box: Box, key: str) -> torch.Tensor:
            """Each drawing over the head and under the hair, cropped to its box: (n, 4 * pixels)."""
            under, above, out = _crop(head, box), _crop(hair, box), []
            for name in names:
                drawing = raster(name)
                _check_inside(drawing, box, spec.files[name], key)
                out.append(_over(above, _over(_crop(drawing, box), under)).ravel())
            return torch.from_numpy(np.stack(out)).to(self.device)

        mouth_box, eyes_box = to_px(spec.mouth_box), to_px(spec.eyes_box)
        mouths, eyes = crops(MOUTH_NAMES, mouth_box, "mouth_box"), crops(EYE_STATES, eyes_box, "eyes_box")
        group = _over(hair, head)
        head_box = _union(_bbox(group[3] > 0, 1), mouth_box, eyes_box)
        breath_px = spec.breath_px * scale
        pad = math.ceil(breath_px) + 1
        body = raster("body", pad)  # padded row r shows frame row r - pad
        bx0, by0, bx1, by1 = _bbox(body[3] > 0, 0)
        body_box = (bx0, max(by0 - 2 * pad, 0), bx1, min(by1, height))
        body_rows = body[:, body_box[1] : body_box[3] + 2 * pad, bx0:bx1].transpose(1, 0, 2)
        pivot = ((spec.pivot[0] - vx) * scale - 0.5, (spec.pivot[1] - vy) * scale - 0.5)
        layout = SpriteLayout(
            (width, height),
            head_box,
            _relative(mouth_box, head_box),
            _relative(eyes_box, head_box),
            body_box,
            pad,
            pivot,
            breath_px,
        )
        background = np.rint(raster("background")[:3].transpose(1, 2, 0)).clip(0, 255).astype(np.uint8)
        head_group = torch.from_numpy(np.ascontiguousarray(_crop(group, head_box)))
        body_table = torch.from_numpy(np.ascontiguousarray(body_rows)).flatten(1)
        face = SpriteFace(
            kind=self.kind,
            size=(width, height),
            mouth_box=mouth_box,
            eyes_box=eyes_box,
            still=np.zeros((height, width, 3), np.uint8),
            layout=layout,
            background=torch.from_numpy(background).to(self.device),
            head=head_group.to(self.device),
            mouths=mouths,
            eyes=eyes,
            body=body_table.to(self.device),
            cpu=None,
        )
        if self.device.type == "cpu":
            face.cpu = CpuSprite.from_tensors(layout, face.background, head_group, mouths, eyes, body_table)
        face.still = self.render_rgb([face], neutral(1))[0]
        return face

    def render_rgb(self, faces: Sequence[SpriteFace], params: np.ndarray) -> np.ndarray:
        """faces[i] posed by params[i] -> uint8 (B, H, W, 3) RGB: the reference picture (tests, stills)."""
        params = self._check(faces, params)
        width, height = faces[0].size
        out = np.empty((len(faces), height, width, 3), np.uint8)
        for lay, index in self._by_layout(faces).items():
            group = [faces[i] for i in index]
            if self.kernel == "opencv":
                part = np.empty((len(index), height, width, 3), np.uint8)
                render_frames(lay, [f.cpu for f in group], params[index], part)
                out[index] = part
                continue
            for chunk, frames in render_tensor_chunks(lay, group, params[index], self.device):
                out[np.asarray(index)[chunk]] = frames.cpu().numpy()
        return out

    def render_i420(
        self, faces: Sequence[SpriteFace], params: np.ndarray, into: Sequence[np.ndarray], **_: object
    ) -> None:
        """faces[i] posed by params[i] -> into[i] as I420 (see FaceRenderer.render_i420)."""
        params = self._check(faces, params)
        for lay, index in self._by_layout(faces).items():
            group, targets = [faces[i] for i in index], [into[i] for i in index]
            if self.kernel == "opencv":
                render_frames_i420(lay, [f.cpu for f in group], params[index], targets)
                continue
            for chunk, frames in render_tensor_chunks(lay, group, params[index], self.device):
                copy_to_host(rgb_to_i420(frames.permute(0, 3, 1, 2).float()), targets[chunk])

    @staticmethod
    def _by_layout(faces: Sequence[SpriteFace]) -> dict[SpriteLayout, list[int]]:
        groups: dict[SpriteLayout, list[int]] = {}
        for i, face in enumerate(faces):
            groups.setdefault(face.layout, []).append(i)
        return groups

    def _check(self, faces: Sequence[SpriteFace], params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=np.float32)
        if params.ndim != 2 or params.shape[1] != N_PARAMS or params.shape[0] != len(faces):
            raise ValueError(
                f"params must be float32 ({len(faces)}, {N_PARAMS}) for {len(faces)} faces, got shape {params.shape}"
            )
        if not faces:
            raise ValueError("render needs at least one face")
        if not np.isfinite(params).all():
            raise ValueError("params hold NaN or infinite values")
        for i, face in enumerate(faces):
            if (
                not isinstance(face, SpriteFace)
                or face.head.device != self.device
                or not (face.cpu or self.kernel == "torch")
            ):
                raise ValueError(f"faces[{i}] was not prepared by a SpriteRenderer on {self.device}")
            if face.size != faces[0].size:
                raise ValueError(f"faces differ in size: faces[0] is {faces[0].size}, faces[{i}] is {face.size}")
        return params


@dataclass(frozen=True)
class _PackSpec:
    """pack.json of a sprite pack, checked: layer files and geometry in canvas units."""

    files: dict[str, Path]
    canvas: int
    mouth_box: tuple[float, ...]
    eyes_box: tuple[float, ...]
    pivot: tuple[float, ...]
    breath_px: float

    @classmethod
    def read(cls, pack_dir: Path) -> _PackSpec:
        manifest = read_manifest(pack_dir)
        where = pack_dir / "pack.json"
        if (kind := manifest["kind"]) != "sprite":
            raise PackError(f"{where}: kind is {kind!r}; the sprite renderer takes 'sprite' packs")
        layers = manifest.get("layers") if isinstance(manifest.get("layers"), dict) else {}
        eyes, mouths = (layers.get(k) if isinstance(layers.get(k), dict) else {} for k in ("eyes", "mouths"))
        entries = {n: (f"layers.{n}", layers.get(n)) for n in ("background", "body", "head", "hair")}
        entries |= {s: (f"layers.eyes.{s}", eyes.get(s)) for s in EYE_STATES}
        entries |= {m: (f"layers.mouths.{m}", mouths.get(m)) for m in MOUTH_NAMES}
        files: dict[str, Path] = {}
        for name, (key, file) in entries.items():
            if not isinstance(file, str):
                raise PackError(f"{where}: {key} must name an SVG file of the pack")
            files[name] = pack_dir / file
        canvas = manifest.get("canvas")
        if not isinstance(canvas, int) or canvas <= 0:
            raise PackError(f"{where}: canvas must be the art's square size in SVG units, e.g. 512")

        def numbers(key: str, n: int, box: bool) -> tuple[float, ...]:
            v = manifest.get(key)
            ok = isinstance(v, list) and len(v) == n and all(isinstance(x, int | float) for x in v)
            if ok and box:
                ok = 0 <= v[0] < v[2] <= canvas and 0 <= v[1] < v[3] <= canvas
            if not ok:
                shape = "[x0, y0, x1, y1] inside the canvas" if box else f"{n} numbers"
                raise PackError(f"{where}: {key} must be {shape}, not {v!r}")
            return tuple(float(x) for x in v)

        mouth_box, eyes_box = numbers("mouth_box", 4, True), numbers("eyes_box", 4, True)
        if all(max(mouth_box[i], eyes_box[i]) < min(mouth_box[i + 2], eyes_box[i + 2]) for i in (0, 1)):
            raise PackError(f"{where}: mouth_box and eyes_box overlap; each must hold only its own drawings")
        breath = manifest.get("breath_px")
        if not isinstance(breath, int | float) or not 0 <= breath <= canvas / 16:
            raise PackError(
                f"{where}: breath_px must be how far the body rises, 0..{canvas / 16:g} canvas units, not {breath!r}"
            )
        return cls(files, canvas, mouth_box, eyes_box, numbers("head_pivot", 2, False), float(breath))


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise ValueError(f"size {size!r} is out of range: width and height must be 16..8192")
    return width, height


def _rasterise(path: Path, canvas: int, view: tuple[float, ...], width: int, height: int) -> np.ndarray:
    """An SVG layer, showing `view` (x, y, w, h in canvas units) -> float32 (4, height, width)."""
    try:
        root = ET.fromstring(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ET.ParseError) as exc:
        raise PackError(f"{path} cannot be read as SVG: {exc}") from exc
    view_box = root.get("viewBox", "").replace(",", " ").split()
    if root.tag != _SVG or view_box != ["0", "0", str(canvas), str(canvas)]:
        raise PackError(f'{path} must be an <svg> element with viewBox="0 0 {canvas} {canvas}" (the canvas)')
    # the image's own size, not resvg's width/height fit, which rounds the other side up
    root.attrib.update(viewBox=" ".join(f"{v:.6f}" for v in view), width=str(width), height=str(height))
    root.attrib.pop("preserveAspectRatio", None)
    try:
        png = resvg_py.svg_to_bytes(svg_string=ET.tostring(root, encoding="unicode"))
    except Exception as exc:  # resvg reports every kind of bad SVG as a plain exception
        raise PackError(f"{path} cannot be rendered: {exc}") from exc
    bgra = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if bgra is None or bgra.shape != (height, width, 4):
        raise PackError(f"{path} rendered to no {width}x{height} RGBA image")
    rgba = bgra[..., [2, 1, 0, 3]].astype(np.float32).transpose(2, 0, 1)
    rgba[3] /= 255
    rgba[:3] *= rgba[3]
    return rgba


def _check_inside(layer: np.ndarray, box: Box, path: Path, key: str) -> None:
    """A mouth or eye drawing must stay inside its box: only the box is redrawn per frame."""
    x0, y0, x1, y1 = box
    outside = layer[3].copy()
    outside[y0:y1, x0:x1] = 0
    if outside.max() > 2 / 255:
        raise PackError(f"{path} draws outside {key} {list(box)} (in pixels): enlarge the box or the drawing")


def _over(top: np.ndarray, under: np.ndarray) -> np.ndarray:
    return top + (1 - top[3:]) * under


def _crop(image: np.ndarray, box: Box) -> np.ndarray:
    return image[:, box[1] : box[3], box[0] : box[2]]


def _bbox(mask: np.ndarray, margin: int) -> Box:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return 0, 0, 0, 0
    h, w = mask.shape
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    return max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, w), min(y1 + margin, h)


def _union(*boxes: Box) -> Box:
    x0s, y0s, x1s, y1s = zip(*boxes, strict=True)
    return min(x0s), min(y0s), max(x1s), max(y1s)


def _relative(box: Box, origin: Box) -> Box:
    return box[0] - origin[0], box[1] - origin[1], box[2] - origin[0], box[3] - origin[1]
