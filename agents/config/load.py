"""Reading a config: YAML -> validated models -> paths resolved and checked, or one ConfigError.

A bad file fails with every problem at once, each as `key.path: bad value — what is wrong;
fix: what to write`. Unknown keys are rejected (a typo must not silently fall back to a
default). Secrets are `env:NAME` / `file:PATH` references (secrets.py).
Relative paths in the file are relative to the file.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from agents.config.errors import format_errors
from agents.config.schema import ChannelConfig, StudioConfig
from agents.config.secrets import SecretRef
from models.avatars import PackError, resolve_pack


class ConfigError(ValueError):
    """The config cannot be used; str() is the full, human-readable report."""


def _voice_problems(i: int, backend: str, written: str, model: str) -> list[str]:
    """What is wrong with a channel's voice files (nothing for the embedded voice)."""
    where = f"  channels[{i}].voice.model: {written!r}"
    if backend == "coqui":
        if not (Path(model) / "config.json").is_file() or not any(Path(model).glob("*.pth")):
            return [f"{where} — not a Coqui model folder; fix: the folder holding its config.json and .pth"]
        return []
    if model == "builtin:joe":
        return []
    if not Path(model).is_file():
        return [f"{where} — no such file; fix: the path of a Piper .onnx voice, or builtin:joe"]
    if not Path(model + ".json").is_file():
        return [f"{where} — its {Path(model).name}.json is missing; fix: put the voice's .onnx.json beside it"]
    return []


def _unrevealed(secret: SecretRef | None, where: str) -> list[str]:
    """[] when `secret` is absent or can be read, else the problem line."""
    try:
        if secret is not None:
            secret.reveal()
    except LookupError as exc:
        return [f"  {where}: {secret} — {exc}"]
    return []


def _resolve_paths(cfg: StudioConfig, base: Path) -> StudioConfig:
    """Make file paths absolute (relative to the config file) and check they exist."""
    problems: list[str] = []
    channels = []

    def absolute(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    for i, ch in enumerate(cfg.channels):
        pack = ch.avatar.pack if ch.avatar.pack.startswith("builtin:") else absolute(ch.avatar.pack)
        try:
            resolve_pack(pack)
        except PackError as exc:
            problems.append(f"  channels[{i}].avatar.pack: {ch.avatar.pack!r} — {exc}")
        model = ch.voice.model if ch.voice.model == "builtin:joe" else absolute(ch.voice.model)
        problems += _voice_problems(i, ch.voice.backend, ch.voice.model, model)
        persona: dict[str, str] = {}
        for key in ("knowledge", "answers"):
            value = getattr(ch.persona, key)
            if value is not None:
                persona[key] = absolute(value)
                if not Path(persona[key]).is_file():
                    problems.append(f"  channels[{i}].persona.{key}: {value!r} — no such file; fix: the path of a file")
        for j, target in enumerate(ch.outputs.rtmp):
            problems += _unrevealed(target.key, f"channels[{i}].outputs.rtmp[{j}].key")
        record = absolute(ch.outputs.record) if ch.outputs.record else None
        channels.append(
            ch.model_copy(
                update={
                    "avatar": ch.avatar.model_copy(update={"pack": pack}),
                    "voice": ch.voice.model_copy(update={"model": model}),
                    "persona": ch.persona.model_copy(update=persona),
                    "outputs": ch.outputs.model_copy(update={"record": record}),
                }
            )
        )
    lipsync = cfg.lipsync
    if lipsync.checkpoint is not None:
        checkpoint = absolute(lipsync.checkpoint)
        if not Path(checkpoint).is_file():
            problems.append(
                f"  lipsync.checkpoint: {lipsync.checkpoint!r} — no such file; fix: the path of the {lipsync.model} "
                "weights (README: neural lip-sync says where to get them)"
            )
        lipsync = lipsync.model_copy(update={"checkpoint": checkpoint})
    problems += _unrevealed(cfg.llm.api_key, "llm.api_key")
    problems += _unrevealed(cfg.obs.password if cfg.obs else None, "obs.password")
    problems += _unrevealed(cfg.server.admin_token, "server.admin_token")
    for i, ice in enumerate(cfg.server.ice_servers):
        problems += _unrevealed(ice.credential, f"server.ice_servers[{i}].credential")
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg.model_copy(update={"channels": channels, "lipsync": lipsync})


def parse_config(data: object, source: str = "config", base: Path | None = None) -> StudioConfig:
    try:
        cfg = StudioConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc, StudioConfig)) from None
    try:
        return _resolve_paths(cfg, base or Path.cwd())
    except ConfigError as exc:
        raise ConfigError(f"{source} is not a valid avatarcast config:\n{exc}") from None


def load_config(path: Path) -> StudioConfig:
    """Read, validate and resolve a config file; raises ConfigError with the full report."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (server:, lipsync:, channels:)")
    return parse_config(data, str(path), Path(path).resolve().parent)


def parse_channel(data: object, studio: StudioConfig, base: Path) -> ChannelConfig:
    """One more channel for a running studio (the admin API), checked exactly as if it were in the file.

    It is validated next to the channels already there, so a name or IRC channel used twice is
    caught too; error lines name its keys as `channel.<key>`.
    """
    if not isinstance(data, dict):
        raise ConfigError("a channel is a JSON object like one entry of channels: in the config file")
    whole = studio.model_dump(mode="json", exclude_none=True)
    index = len(whole["channels"])
    whole["channels"] = [*whole["channels"], data]
    try:
        return parse_config(whole, "the new channel", base).channels[index]
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(f"channels[{index}]", "channel")) from None
