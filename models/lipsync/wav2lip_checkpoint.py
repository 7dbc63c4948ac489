"""Loading Wav2Lip-family generator checkpoints from a local file, with errors that say what the file is.

Upstream `wav2lip.pth` / `wav2lip_gan.pth` (and LiveTalking's `wav2lip256.pth`) are
`{"state_dict": {"module.<name>": tensor, ...}, "optimizer": ..., "global_step": ...}` saved from a
DataParallel model; plain state dicts, with or without the `module.` prefix, load too. Files are
read with `weights_only=True`, so a checkpoint cannot run code while it is unpickled. Nothing is
ever downloaded here: the caller passes a file that is already on disk.

The usual mistake is the wrong file (the 256 model for the 96 one, the SyncNet expert or the
quality discriminator from the same release), so a failed load names what the file looks like.
"""

from __future__ import annotations

import functools
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from models.lipsync.wav2lip_net import Wav2Lip, Wav2Lip256

__all__ = ["ARCHITECTURES", "CheckpointError", "detect_architecture", "load_wav2lip"]

Architecture = Literal["wav2lip", "wav2lip256"]
ARCHITECTURES: dict[str, type[nn.Module]] = {"wav2lip": Wav2Lip, "wav2lip256": Wav2Lip256}
_PREFIX = "module."
# BatchNorm counters that only matter for training with momentum=None; old checkpoints lack them.
_OPTIONAL_SUFFIX = "num_batches_tracked"
_SHOWN = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot become the requested network; the message names the file, what
    does not fit and what the file looks like instead."""


@functools.cache
def _expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of `arch`, built on the meta device (no memory, no init time)."""
    with torch.device("meta"):
        model = ARCHITECTURES[arch]()
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def _read(path: Path) -> object:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file); nothing is downloaded for you")
    with path.open("rb") as file:
        head = file.read(1)
    # torch.save writes a zip archive; before PyTorch 1.6 (upstream's files) a pickle (protocol 2+).
    if not (zipfile.is_zipfile(path) or head == b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a torch.save zip nor a legacy pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" (it needs {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} holds Python objects beyond tensors and plain containers{what}, so it was not loaded: "
            "weights_only=True refuses to run code from a file. If you trust the file, re-save only its "
            "weights: torch.save({'state_dict': model.state_dict()}, path)"
        ) from None
    except Exception as exc:  # a damaged archive or pickle surfaces as many exception types
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {type(exc).__name__}: {exc}") from None


def _state_dict(path: Path, loaded: object) -> dict[str, torch.Tensor]:
    """The tensors of `loaded` keyed without the DataParallel prefix."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(
            f"{path} holds {type(loaded).__name__}, not a state dict (or a dict with a 'state_dict' entry)"
        )
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{path} holds a dict with no tensors (keys: {', '.join(map(str, list(loaded)[:_SHOWN]))})"
        )
    return {k.removeprefix(_PREFIX): v for k, v in tensors.items()}


def detect_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """What a state dict (without `module.` prefixes) looks like, in words for an error message.

    Exact fits name the architecture ("wav2lip", "wav2lip256"); otherwise the Wav2Lip release's other
    networks and LiveTalking's 384 variant are recognised by their distinctive modules.
    """
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for arch in ARCHITECTURES:
        expected = _expected_shapes(arch)
        if all(shapes.get(k) == shape for k, shape in expected.items() if not k.endswith(_OPTIONAL_SUFFIX)) and set(
            shapes
        ) <= set(expected):
            return arch
    keys = set(shapes)
    if any(k.startswith("binary_pred.") for k in keys):
        return "the Wav2Lip visual-quality discriminator (Wav2Lip_disc_qual), not a generator"
    if any(k.startswith("face_encoder.") for k in keys) and any(k.startswith("audio_encoder.") for k in keys):
        return "the SyncNet lip-sync expert (lipsync_expert.pth), not a generator"
    if any(k.startswith(("sam.", "audio_refine.")) for k in keys):
        return "LiveTalking's wav2lip384 generator (spatial attention, 1024 channels), which is not supported"
    if any(k.startswith("face_decoder_blocks.") for k in keys):
        last = shapes.get("face_encoder_blocks.7.0.conv_block.0.weight")
        if last is not None and last[-1] == 4:
            return "a wav2lip256-like generator with different layers"
        return "a Wav2Lip-like generator with different layers"
    return "no known Wav2Lip-family network"


def _fit_report(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """None when `state` fits, else 'N missing keys (…); N unexpected …; N misshaped …'."""
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    misshaped = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if not (missing or unexpected or misshaped):
        return None

    def listed(keys: list[str], noun: str, describe: Callable[[str], str] = str) -> str:
        more = f", and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
        items = ", ".join(describe(k) for k in keys[:_SHOWN])
        return f"{len(keys)} {noun}{'' if len(keys) == 1 else 's'}" + (f" ({items}{more})" if keys else "")

    def shape_of(key: str) -> str:
        return f"{key}: expected {list(expected[key])}, got {list(state[key].shape)}"

    return "; ".join(
        (
            listed(missing, "missing key"),
            listed(unexpected, "unexpected key"),
            listed(misshaped, "misshaped key", shape_of),
        )
    )


def load_wav2lip(path: str | Path, arch: Architecture = "wav2lip", device: str | torch.device = "cpu") -> nn.Module:
    """The generator `arch` with the weights in `path`, on `device`, in eval mode.

    Raises CheckpointError (one message: the file, missing/unexpected/misshaped keys, what the
    file looks like) for anything that is not a checkpoint of exactly that network.
    """
    path = Path(path)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown Wav2Lip architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    state = _state_dict(path, _read(path))
    expected = _expected_shapes(arch)
    problems = _fit_report(state, expected)
    if problems:
        looks = detect_architecture(state)
        hint = (
            f"load it with arch={looks!r}"
            if looks in ARCHITECTURES
            else "use a generator checkpoint: wav2lip.pth / wav2lip_gan.pth (96 px) or wav2lip256.pth"
        )
        raise CheckpointError(
            f"{path} does not fit {ARCHITECTURES[arch].__name__} (arch={arch!r}); it looks like {looks}: {hint}. "
            f"{problems}"
        )
    model = ARCHITECTURES[arch]()
    model.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent (checked above)
    return model.to(device).eval()
