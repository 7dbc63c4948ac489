"""Offline face landmarks (MediaPipe Face Mesh models on LiteRT) and the "photo" avatar pack.

The models are fetched once by `avatarcast setup` (fetch_face_models); FaceLandmarker finds faces
and 468 landmarks in a picture; prepare_photo_pack turns a user's photo into a pack that the
lip-sync renderer warps, and PhotoPack.load reads it back.
"""

from models.faces.fetch import FaceModelsFetchError, fetch_face_models, missing_face_models
from models.faces.landmarks import (
    FACE_OVAL,
    JAW,
    LEFT_EYE,
    LIPS_INNER,
    LIPS_OUTER,
    RIGHT_EYE,
    Face,
    FaceLandmarker,
    FaceModelsMissing,
)
from models.faces.photo_pack import REGIONS, PhotoError, PhotoPack, prepare_photo_pack

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
