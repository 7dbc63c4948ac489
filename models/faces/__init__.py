"""Offline face landmarks (MediaPipe Face Mesh models on LiteRT) and the "photo" avatar pack.

The models are fetched once by `avatarcast setup` (fetch_face_models); FaceLandmarker finds faces
and 468 landmarks in a picture; prepare_photo_pack turns a user's photo into a pack that the
lip-sync renderer warps, and PhotoPack.load reads it back. Names that need the LiteRT runtime are
imported when first used, so a process that only renders prepared packs never loads it.
"""

from importlib import import_module
from typing import Any

from models.faces.mesh import FACE_OVAL, JAW, LEFT_EYE, LIPS_INNER, LIPS_OUTER, RIGHT_EYE
from models.faces.photo_io import PhotoError
from models.faces.photo_pack import REGIONS, PhotoPack

_LAZY = {
    "Face": "models.faces.landmarks",
    "FaceLandmarker": "models.faces.landmarks",
    "FaceModelsMissing": "models.faces.landmarks",
    "FaceModelsFetchError": "models.faces.fetch",
    "fetch_face_models": "models.faces.fetch",
    "missing_face_models": "models.faces.fetch",
    "prepare_photo_pack": "models.faces.photo_prepare",
}

__all__ = [
    "FACE_OVAL",
    "JAW",
    "LEFT_EYE",
    "LIPS_INNER",
    "LIPS_OUTER",
    "REGIONS",
    "RIGHT_EYE",
    "Face",
    "FaceLandmarker",
    "FaceModelsFetchError",
    "FaceModelsMissing",
    "PhotoError",
    "PhotoPack",
    "fetch_face_models",
    "missing_face_models",
    "prepare_photo_pack",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models.faces' has no attribute {name!r}")
