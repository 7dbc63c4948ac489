"""The drawn default avatar: SVG layers rasterised once per channel, posed per frame in one tensor call.

A frame of the drawn character differs from its neutral frame only in which mouth and eye drawings
show and where the head group and the body sit. So `prepare` rasterises every layer once and
pre-composites each mouth and eye drawing, with the head below and the front hair above it, into a
small box crop; `render` then only blends crops, pastes them into the head group, warps that with
one batched `grid_sample` and shifts the body: float32 tensor work over the changing regions of a
whole batch of frames (any channels, any packs), the same code on CPU and CUDA.

Colours are premultiplied and kept 0..255 (alpha 0..1), so "over" is one multiply-add and the
result needs no rescale before it becomes uint8.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import resvg_py
import torch
import torch.nn.functional as F

from models.avatars import PackError, read_manifest
from models.lipsync.params import BLINK, BREATH, HEAD_DX, HEAD_DY, HEAD_TILT, MOUTH, N_PARAMS, neutral
from models.lipsync.visemes import VISEME_SHAPES, Viseme

MOUTH_NAMES = tuple(v.name.lower() for v in Viseme)
"""The keys of pack.json `layers.mouths`, in Viseme order: one drawing per viseme class."""
EYE_STATES = ("open", "half", "closed")
"""The keys of pack.json `layers.eyes`; blink 0, 0.5 and 1 show each unmixed."""
MOUTH_REACH = 0.3
"""Each viseme's Gaussian around its (jaw, width, round) target has a width of MOUTH_REACH times the
distance to the nearest other target. Sharp, so a frame shows one drawing or a crossfade of two, as
hand-drawn lip sync does, instead of a ghosted stack; scaled, so close pairs (fv, cons) still part
cleanly while far ones (eh to aa) crossfade over a longer stretch of the jaw's travel."""
_CPU_CHUNK_BYTES = 8 << 20
"""On CPU a batch renders in chunks whose intermediates stay this small: they stay in cache, and glibc
serves them from its heap. Blocks of 32 MiB and more are fresh mmaps whose page faults cost more
than the blending done in them."""
_SVG = "{http://www.w3.org/2000/svg}svg"
_TARGETS = torch.tensor([VISEME_SHAPES[v] for v in Viseme], dtype=torch.float32)
_SIGMAS = MOUTH_REACH * (torch.cdist(_TARGETS, _TARGETS) + torch.eye(len(Viseme)) * 1e9).min(1).values

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""


@dataclass(frozen=True)
class _Layout:
    """Where a face's parts sit; faces with equal layouts share every tensor shape, so batch together."""

    size: tuple[int, int]
    head: Box  # the head group's crop in the frame
    mouth: Box  # the mouth crop, relative to the head crop
    eyes: Box  # the eyes crop, relative to the head crop
    body: Box  # the frame region the body covers at any breath
    pad: int  # rows the body table holds beyond that region, above and below
    pivot: tuple[float, float]  # centre of head roll, in pixel-centre coordinates
    breath_px: float  # how far the body rises at breath 1


@dataclass(eq=False)
class SpriteFace:
    """A sprite pack ready for one frame size on one device (a PreparedFace)."""

    kind: str
    size: tuple[int, int]
    mouth_box: Box
    eyes_box: Box
    still: np.ndarray
    layout: _Layout
    background: torch.Tensor  # (H, W, 3) uint8: the frame wherever nothing moves
    head: torch.Tensor  # (4, h, w) head group with neither eyes nor mouth
    mouths: torch.Tensor  # (11, 4 * mouth pixels): the head-group crop under each mouth drawing
    eyes: torch.Tensor  # (3, 4 * eye pixels): the same for open, half and closed eyes
    body: torch.Tensor  # (rows, 4 * width): body rows, padded for the breathing shift


class SpriteRenderer:
    """Renders sprite packs (the project's drawn characters); implements FaceRenderer."""

    kind = "sprite"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.empty(0, device=device).device  # canonical form, e.g. cuda -> cuda:0

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
        layout = _Layout(
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
        face = SpriteFace(
            kind=self.kind,
            size=(width, height),
            mouth_box=mouth_box,
            eyes_box=eyes_box,
            still=np.zeros((height, width, 3), np.uint8),
            layout=layout,
            background=torch.from_numpy(background).to(self.device),
            head=torch.from_numpy(np.ascontiguousarray(_crop(group, head_box))).to(self.device),
            mouths=mouths,
            eyes=eyes,
            body=torch.from_numpy(np.ascontiguousarray(body_rows)).flatten(1).to(self.device),
        )
        face.still = self.render([face], neutral(1))[0]
        return face

    def render(self, faces: Sequence[SpriteFace], params: np.ndarray) -> np.ndarray:
        """faces[i] posed by params[i] -> uint8 (B, H, W, 3) RGB; see FaceRenderer.render."""
        params = self._check(faces, params)
        width, height = faces[0].size
        out = np.empty((len(faces), height, width, 3), np.uint8)
        groups: dict[_Layout, list[int]] = {}
        for i, face in enumerate(faces):
            groups.setdefault(face.layout, []).append(i)
        for lay, index in groups.items():
            x0, y0, x1, y1 = lay.head
            step = len(index)
            if self.device.type == "cpu":  # its largest intermediate: float32 RGBA head groups
                step = max(1, _CPU_CHUNK_BYTES // (16 * (x1 - x0) * (y1 - y0)))
            for start in range(0, len(index), step):
                part = index[start : start + step]
                out[part] = self._render_group([faces[i] for i in part], params[part]).cpu().numpy()
        return out

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
            if not isinstance(face, SpriteFace) or face.head.device != self.device:
                raise ValueError(f"faces[{i}] was not prepared by a SpriteRenderer on {self.device}")
            if face.size != faces[0].size:
                raise ValueError(f"faces differ in size: faces[0] is {faces[0].size}, faces[{i}] is {face.size}")
        return params

    def _render_group(self, faces: Sequence[SpriteFace], params: np.ndarray) -> torch.Tensor:
        """Frames of faces sharing one layout -> uint8 (B, H, W, 3) on the device."""
        lay = faces[0].layout
        unique = list({id(f): f for f in faces}.values())
        slots = {id(f): i for i, f in enumerate(unique)}
        slot = torch.tensor([slots[id(f)] for f in faces], device=self.device)

        def table(name: str) -> torch.Tensor:
            """The batch's distinct faces' tensors stacked (a view for one face), to index by `slot`."""
            tensors = [getattr(f, name) for f in unique]
            return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)

        pose = torch.from_numpy(params).to(self.device)
        head = table("head").index_select(0, slot)  # index_select copies slices whole; [slot] is far slower
        _paste(head, lay.mouth, _blend(table("mouths"), slot, _mouth_weights(pose[:, MOUTH])))
        _paste(head, lay.eyes, _blend(table("eyes"), slot, _eye_weights(pose[:, BLINK])))
        reach = _warp_region(lay, params)
        grid = _warp_grid(lay, reach, pose)
        head = F.grid_sample(head, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = table("background").index_select(0, slot)
        _composite(out, reach, head)
        _composite(out, lay.body, _shift_body(table("body"), slot, lay, pose[:, BREATH]))
        return out


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


def _mouth_weights(mouth: torch.Tensor) -> torch.Tensor:
    """(B, 3) jaw, width, round -> (B, 11) weights: a normalised Gaussian RBF over the viseme targets."""
    d2 = ((mouth[:, None, :] - _TARGETS.to(mouth.device)) ** 2).sum(-1)
    # softmax of the log-Gaussians: stays normalised far from every target, where each one underflows
    return torch.softmax(d2 / (-2 * _SIGMAS.to(mouth.device) ** 2), dim=1)


def _eye_weights(blink: torch.Tensor) -> torch.Tensor:
    """(B,) blink -> (B, 3) weights of open, half, closed: linear between neighbouring states."""
    b = blink.clamp(0, 1)
    opened, closed = (1 - 2 * b).clamp_min(0), (2 * b - 1).clamp_min(0)
    return torch.stack((opened, 1 - opened - closed, closed), dim=1)


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


def _warp_region(lay: _Layout, params: np.ndarray) -> Box:
    """The frame region the head group can reach in this batch: its crop grown by the largest move."""
    width, height = lay.size
    x0, y0, x1, y1 = lay.head
    px, py = lay.pivot
    reach = max(math.hypot(x - px, y - py) for x in (x0, x1) for y in (y0, y1))
    turn = reach * min(float(np.abs(params[:, HEAD_TILT]).max()), 2.0)  # a chord is at most 2 radii long
    mx = math.ceil(float(np.abs(params[:, HEAD_DX]).max()) * width + turn) + 1
    my = math.ceil(float(np.abs(params[:, HEAD_DY]).max()) * height + turn) + 1
    return max(x0 - mx, 0), max(y0 - my, 0), min(x1 + mx, width), min(y1 + my, height)


def _warp_grid(lay: _Layout, region: Box, pose: torch.Tensor) -> torch.Tensor:
    """grid_sample grid: for each pixel of `region`, where it comes from in the head crop.

    The head moves by (dx, dy) and rolls clockwise by tilt about the pivot; the grid is the inverse."""
    width, height = lay.size
    hx0, hy0, hx1, hy1 = lay.head
    px, py = lay.pivot
    cos, sin = torch.cos(pose[:, HEAD_TILT])[:, None, None], torch.sin(pose[:, HEAD_TILT])[:, None, None]
    xs = torch.arange(region[0], region[2], dtype=torch.float32, device=pose.device)[None, None, :] - px
    ys = torch.arange(region[1], region[3], dtype=torch.float32, device=pose.device)[None, :, None] - py
    u = xs - (pose[:, HEAD_DX] * width)[:, None, None]
    v = ys - (pose[:, HEAD_DY] * height)[:, None, None]
    # source pixel centre c lies at normalised (2c + 1) / size - 1 (align_corners=False)
    gx = (cos * u + sin * v + (px - hx0 + 0.5)) * (2 / (hx1 - hx0)) - 1
    gy = (cos * v - sin * u + (py - hy0 + 0.5)) * (2 / (hy1 - hy0)) - 1
    return torch.stack((gx, gy), dim=-1)


def _shift_body(table: torch.Tensor, slot: torch.Tensor, lay: _Layout, breath: torch.Tensor) -> torch.Tensor:
    """The body region with the body raised by breath * breath_px, sub-pixel (linear between rows)."""
    x0, y0, x1, y1 = lay.body
    rise = breath.clamp(-1, 1) * lay.breath_px
    whole = torch.floor(rise)
    first = whole.long() + lay.pad + slot * table.shape[1]  # each frame's first row in the flat table
    rows = (first[:, None] + torch.arange(y1 - y0, device=breath.device)).flatten()
    flat = table.flatten(0, 1)
    low, high = (flat.index_select(0, r).view(len(slot), y1 - y0, 4, x1 - x0) for r in (rows, rows + 1))
    return torch.lerp(low, high, (rise - whole)[:, None, None, None]).permute(0, 2, 1, 3)


def _composite(frames: torch.Tensor, box: Box, layer: torch.Tensor) -> None:
    """frames[box] = layer over frames[box], in place: uint8 (B, H, W, 3) frames, (B, 4, h, w) layer."""
    x0, y0, x1, y1 = box
    region = frames[:, y0:y1, x0:x1]
    mixed = region.permute(0, 3, 1, 2).float().mul_(1 - layer[:, 3:]).add_(layer[:, :3])
    region.copy_(mixed.add_(0.5).clamp_(0, 255).permute(0, 2, 3, 1))  # the float -> uint8 copy truncates
