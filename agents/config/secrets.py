"""Secrets are referenced in config, never written in it: `env:NAME` or `file:/path`.

A SecretRef only reveals its value when asked, and prints as its reference, so a stream key or
a password cannot end up in a log line or a page by accident.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

HOW_TO = "write env:NAME (and export NAME=...) or file:/path/to/secret — never the secret itself"


class SecretRef:
    __slots__ = ("name", "source")

    def __init__(self, source: str, name: str) -> None:
        self.source = source
        self.name = name

    @classmethod
    def parse(cls, value: object) -> SecretRef:
        if isinstance(value, SecretRef):
            return value
        if not isinstance(value, str):
            raise ValueError(f"a secret must be a reference string; {HOW_TO}")
        source, _, name = value.partition(":")
        if source not in ("env", "file") or not name:
            raise ValueError(f"secrets are not written in the config file; {HOW_TO}")
        return cls(source, name)

    def reveal(self) -> str:
        """The secret's value; raises LookupError (with the fix) when it is not there."""
        if self.source == "env":
            value = os.environ.get(self.name)
            if value is None:
                raise LookupError(f"environment variable {self.name} is not set; export {self.name}=...")
            return value
        try:
            return Path(self.name).expanduser().read_text().strip()
        except OSError as exc:
            raise LookupError(f"secret file {self.name} cannot be read: {exc.strerror}") from exc

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"

    def __repr__(self) -> str:
        return f"SecretRef({self})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SecretRef) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls.parse, serialization=core_schema.to_string_ser_schema())
