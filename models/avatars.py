"""Avatar packs on disk: a directory with a pack.json that says which kind it is.

  sprite  the project's own drawn character (SVG layers), models/assets/<name>/
  photo   a user's photo prepared by `avatarcast avatar prepare PHOTO -o DIR`
  video   a short clip of the person, `avatarcast avatar prepare CLIP.mp4 -o DIR` (neural lip-sync)

`builtin:<name>` names a pack shipped inside this package.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
PACK_FORMAT = "avatarcast-pack"
PACK_KINDS = ("sprite", "photo", "video")


class PackError(ValueError):
    """A pack directory that cannot be used; the message says what is wrong and how to fix it."""


def builtin_packs() -> list[str]:
    return sorted(p.parent.name for p in ASSETS.glob("*/pack.json"))


def resolve_pack(ref: str | Path) -> Path:
    """`builtin:<name>` or a path -> the pack directory (checked to exist and hold a pack.json)."""
    ref = str(ref)
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        path = ASSETS / name
        if not (path / "pack.json").is_file():
            raise PackError(f"no built-in avatar pack {name!r}; built-in packs: {', '.join(builtin_packs())}")
        return path
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise PackError(
            f"avatar pack {ref!r} is not a directory; make one with `avatarcast avatar prepare PHOTO -o {ref}`"
        )
    if not (path / "pack.json").is_file():
        raise PackError(f"{path} holds no pack.json; is it the output of `avatarcast avatar prepare`?")
    return path


def read_manifest(pack_dir: Path) -> dict:
    """The parsed pack.json, checked for format and kind."""
    try:
        manifest = json.loads((pack_dir / "pack.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PackError(f"{pack_dir / 'pack.json'} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise PackError(f"{pack_dir / 'pack.json'} is not an avatar pack (format must be {PACK_FORMAT!r})")
    if manifest.get("kind") not in PACK_KINDS:
        raise PackError(f"{pack_dir / 'pack.json'}: kind {manifest.get('kind')!r} is not one of {PACK_KINDS}")
    return manifest


def pack_kind(pack_dir: Path) -> str:
    return str(read_manifest(pack_dir)["kind"])
