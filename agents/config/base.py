"""The base every config section derives from (kept apart so section modules can import it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Unknown keys are errors (a typo must not fall back to a default); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
