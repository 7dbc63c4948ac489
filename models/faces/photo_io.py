"""Reading a user's photo: every way it can be unusable becomes a PhotoError that says the fix.

cv2.imdecode, not cv2.imread: imread decodes a truncated JPEG into a picture with a flat grey
bottom (only a warning on stderr), imdecode refuses it. Both apply the EXIF orientation, so phone
photos come out upright. Sizes are read from the PNG/JPEG header first, so a huge or malicious
image is refused before gigabytes are allocated for it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MAX_PIXELS = 40_000_000
MIN_SIDE = 64
# JPEG start-of-frame markers (they carry the image size); C4, C8 and CC are other segments.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class PhotoError(ValueError):
    """A photo that cannot become an avatar; the message names the file, the problem and the fix."""


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, or None for other formats or odd headers."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            i += 2
        elif marker in _JPEG_SOF:
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _check_size(name: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise PhotoError(
            f"{name} is {width}x{height} ({width * height / 1e6:.0f} MP), more than "
            f"{MAX_PIXELS // 1_000_000} MP: scale it down (2000 px on the long side is plenty)"
        )
    if min(width, height) < MIN_SIDE:
        raise PhotoError(
            f"{name} is only {width}x{height} pixels: use a photo at least {MIN_SIDE} px on each side "
            "(a few hundred pixels across the face looks best)"
        )


def read_photo(path: Path) -> np.ndarray:
    """The photo at `path` as uint8 (H, W, 3) RGB, upright as its EXIF orientation says."""
    name = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PhotoError(f"cannot read {name}: there is no such file ({path})") from None
    except OSError as exc:
        raise PhotoError(f"cannot read {name}: {exc.strerror or exc}") from None
    if not data:
        raise PhotoError(f"cannot read {name}: the file is empty; export the photo again")
    declared = _header_size(data)
    if declared:
        _check_size(name, *declared)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None:
        raise PhotoError(
            f"cannot read {name}: it is not an image OpenCV can decode, or it is truncated or corrupt; "
            "save or export it again as JPEG or PNG"
        )
    _check_size(name, bgr.shape[1], bgr.shape[0])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
