"""Per-photo geometry for the warp renderer, computed once when a channel loads its pack.

From the face-mesh landmarks it builds, over a window around the mouth and eyes, the maps that
turn a pose into a sampling offset per pixel (all in image pixels, pixel i covering [i, i+1)):

  M0, M1   how far the lower lip / jaw moves down the mouth's vertical axis: M0 + jaw * M1.
           jaw 0 closes the lips (the lower lip rises over the photo's own gap), jaw 1 opens
           them by MAX_OPEN; the chin follows, the neck stretches.
  L        signed distance below the upper inner lip line: where 0 < L < M the output samples
           above the lip line, i.e. the opening — painted as the inner mouth.
  U        position across the mouth (-1 at one corner, +1 at the other), to shade the cavity.
  W, R     (x, y) offsets per unit of lip width (corners out, lips thinner) and of rounding
           (corners in, lips taller).
  K        (x, y) offset per unit of blink: the lids close to a line (the skin around stretches).

Offsets are "where to sample from": output pixel p shows source p + offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# landmark indices (MediaPipe face mesh)
MOUTH_CORNERS = (61, 291)
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_OUTER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
CHIN = 152
EYES = (
    # (corner, corner, upper lid, lower lid): the subject's right eye, then the left
    (33, 133, (33, 246, 161, 160, 159, 158, 157, 173, 133), (33, 7, 163, 144, 145, 153, 154, 155, 133)),
    (362, 263, (362, 398, 384, 385, 386, 387, 388, 466, 263), (362, 382, 381, 380, 374, 373, 390, 249, 263)),
)

MAX_OPEN = 0.6  # widest jaw drop, in half mouth widths
CLOSE_OVERLAP = 2.5  # pixels the lower lip rises past the photo's own lip gap at jaw 0
LIP_LINE_RAISE = 1.5  # pixels: the mesh's inner-lip line sits a little below the lip's edge
MEET, LID_ABOVE, LID_BELOW = 0.7, 1.0, 0.8  # closed lids meet 70% down the opening; stretch bands
SPREAD = 0.18  # corners out at width 1, in half mouth widths
ROUND_IN = 0.3  # corners in at round 1
THIN, TALL = 0.15, 0.22  # lip height change at width 1 / round 1
N_CHANNELS = 10
M0, M1, L, U, WX, WY, RX, RY, KX, KY = range(N_CHANNELS)


def _smoothstep(e0: float | np.ndarray, e1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass(frozen=True)
class _Frame:
    """A local frame: origin, unit axes (x along the feature, y pointing down the face)."""

    origin: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def from_corners(cls, a: np.ndarray, b: np.ndarray) -> _Frame:
        x = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6)
        y = np.array([-x[1], x[0]])
        if y[1] < 0:
            y = -y
        return cls((a + b) / 2, x, y)

    def local(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = pts - self.origin
        return d @ self.x, d @ self.y

    def curve(self, pts: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The contour through `pts` as v(u), extended flat past its ends."""
        pu, pv = self.local(pts)
        order = np.argsort(pu)
        return np.interp(u, pu[order], pv[order])


@dataclass(frozen=True)
class FaceFields:
    window: tuple[int, int, int, int]
    """x0, y0, x1, y1 (pixels) of the region the maps cover; outside it nothing moves locally."""
    maps: np.ndarray
    """float32 (N_CHANNELS, y1 - y0, x1 - x0)."""
    mouth_down: np.ndarray
    """Unit vector of the mouth's vertical axis (image x, y): jaw offsets point along it."""
    half_width: float
    """Half the mouth width (pixels): scales the inner-mouth drawing."""
    mouth_box: tuple[int, int, int, int]
    chin_y: float
    face_height: float


def build_fields(landmarks: np.ndarray, size: tuple[int, int]) -> FaceFields:
    """Landmarks (468, >=2) in pixels of an image of `size` (w, h) -> the warp maps."""
    w_img, h_img = size
    pts = landmarks[:, :2].astype(np.float64)
    mouth = _Frame.from_corners(pts[MOUTH_CORNERS[0]], pts[MOUTH_CORNERS[1]])
    a = float(np.linalg.norm(pts[MOUTH_CORNERS[1]] - pts[MOUTH_CORNERS[0]])) / 2
    chin_v = float(mouth.local(pts[CHIN][None])[1][0])
    face_h = float(pts[CHIN, 1] - pts[10, 1])

    # the window: eyes to below the chin, cheek to cheek
    eye_pts = pts[[i for eye in EYES for i in eye[2] + eye[3]]]
    x0 = int(max(0, min(eye_pts[:, 0].min(), pts[MOUTH_CORNERS, 0].min() - 2.3 * a) - 8))
    x1 = int(min(w_img, max(eye_pts[:, 0].max(), pts[MOUTH_CORNERS, 0].max() + 2.3 * a) + 8))
    y0 = int(max(0, eye_pts[:, 1].min() - 0.3 * face_h))
    y1 = int(min(h_img, pts[CHIN, 1] + 0.9 * a + 2 * MAX_OPEN * a + 4))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    grid = np.stack([xx, yy], -1)
    maps = np.zeros((N_CHANNELS, y1 - y0, x1 - x0), np.float64)

    # ---- jaw and lips
    u, v = mouth.local(grid)
    upper = mouth.curve(pts[list(UPPER_INNER_LIP)], u) - LIP_LINE_RAISE
    lower = mouth.curve(pts[list(LOWER_INNER_LIP)], u)
    gap = (np.clip(lower - upper, 0.0, None) + CLOSE_OVERLAP) * np.clip(1 - (u / a) ** 4, 0.0, 1.0)
    taper = np.clip(1 - (u / a) ** 2, 0.0, 1.0)
    broad = 1 - _smoothstep(1.0 * a, 2.2 * a, np.abs(u))
    top = _smoothstep(upper - 0.5, upper + 1.0, v)
    bottom = 1 - _smoothstep(chin_v, chin_v + 0.9 * a, v)
    toward_chin = _smoothstep(upper, upper + 0.6 * max(chin_v - upper.max(), 1.0), v)
    env = top * bottom
    gap0 = max(float((pts[14] - pts[13]) @ mouth.y), 0.0)  # the photo's lip gap at the middle
    maps[M0] = env * ((1 - toward_chin) * -gap + toward_chin * broad * -0.5 * gap0)
    maps[M1] = env * ((1 - toward_chin) * (MAX_OPEN * a * taper + gap) + toward_chin * broad * MAX_OPEN * a)
    maps[L] = v - upper
    maps[U] = np.clip(u / a, -1.0, 1.0)

    # ---- lip width and rounding: corners move along the mouth axis, lips change height
    lip_mid = (mouth.curve(pts[list(UPPER_OUTER_LIP)], u) + mouth.curve(pts[list(LOWER_OUTER_LIP)], u)) / 2
    lip_h = max(float((pts[17] - pts[0]) @ mouth.y) / 2, 2.0)  # half the lips' height at the middle
    lips_env = 1 - _smoothstep(1.2 * lip_h, 3.0 * lip_h, np.abs(v - lip_mid))
    lips_env *= 1 - _smoothstep(a, 1.9 * a, np.abs(u))
    along = np.sign(u) * np.minimum(np.abs(u) / a, 1.0) * lips_env
    across = (v - lip_mid) * lips_env
    width = -SPREAD * a * along[..., None] * mouth.x + THIN * across[..., None] * mouth.y
    rounding = ROUND_IN * a * along[..., None] * mouth.x - TALL * across[..., None] * mouth.y
    maps[WX], maps[WY] = width[..., 0], width[..., 1]
    maps[RX], maps[RY] = rounding[..., 0], rounding[..., 1]

    # ---- blinks: the lids meet at MEET of the opening; the skin above and below stretches over
    for c0, c1, upper_lid, lower_lid in EYES:
        eye = _Frame.from_corners(pts[c0], pts[c1])
        ae = float(np.linalg.norm(pts[c1] - pts[c0])) / 2
        eu, ev = eye.local(grid)
        top = eye.curve(pts[list(upper_lid)], eu)
        bottom = eye.curve(pts[list(lower_lid)], eu)
        h = np.clip(bottom - top, 0.0, None)
        meet = top + MEET * h
        above_top, below_bottom = top - LID_ABOVE * h, bottom + LID_BELOW * h
        src_up = above_top + (ev - above_top) * LID_ABOVE / (LID_ABOVE + MEET)  # [above_top, meet] <- [above_top, top]
        src_dn = below_bottom - (below_bottom - ev) * LID_BELOW / (LID_BELOW + 1 - MEET)
        shift = np.where(ev < meet, src_up - ev, src_dn - ev)
        shift *= (ev > above_top) & (ev < below_bottom)
        shift *= 1 - _smoothstep(0.9 * ae, 1.25 * ae, np.abs(eu))
        maps[KX] += shift * eye.y[0]
        maps[KY] += shift * eye.y[1]

    outer = pts[list(LOWER_OUTER_LIP) + list(UPPER_OUTER_LIP)]
    box = (
        max(0, int(outer[:, 0].min() - 0.2 * a)),
        max(0, int(outer[:, 1].min() - 0.3 * a)),
        min(w_img, int(outer[:, 0].max() + 0.2 * a) + 1),
        min(h_img, int(outer[:, 1].max() + MAX_OPEN * a) + 1),
    )
    return FaceFields(
        window=(x0, y0, x1, y1),
        maps=maps.astype(np.float32),
        mouth_down=mouth.y.astype(np.float32),
        half_width=a,
        mouth_box=box,
        chin_y=float(pts[CHIN, 1]),
        face_height=face_h,
    )
