"""The base of every platforms.yaml model: frozen once loaded, and a key it does not know is an error."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
