"""A pydantic validation error as the config's user should read it: the key path, the bad value,
what is wrong and the fix, every problem at once; a secret written into the file is never echoed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from agents.config.secrets import HOW_TO


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "literal[", "list[", "str", "int")):
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _fix(root: type[BaseModel], err: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        model = _model_at(root, err["loc"][:-1])
        allowed = ", ".join(model.model_fields) if model else "see README"
        return f"unknown key; fix: remove it or correct the spelling (allowed here: {allowed})"
    if kind == "missing":
        return "required; fix: add it"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    return err["msg"][0].lower() + err["msg"][1:]


def format_errors(source: str, exc: ValidationError, root: type[BaseModel]) -> str:
    """Every problem of `exc` as `key.path: value — what is wrong; fix: ...` (values of secrets hidden)."""
    lines = [f"{source} is not a valid avatarcast config:"]
    for err in exc.errors():
        fix = _fix(root, err)
        if err["type"] in ("missing", "extra_forbidden") or isinstance(err["input"], (dict, list)):
            shown = ""
        elif HOW_TO in fix:  # a secret written in the file must not be echoed into logs
            shown = "(value hidden) — "
        else:
            shown = f"{err['input']!r} — "
        lines.append(f"  {_loc(err['loc'])}: {shown}{fix}")
    return "\n".join(lines)
