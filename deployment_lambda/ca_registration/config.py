"""Environment of the deployment function, validated once per container."""

from __future__ import annotations

import os
from functools import cache

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    audit_table: str | None = Field(default=None, min_length=3, max_length=255)


@cache
def get_settings() -> Settings:
    table = os.environ.get("AUDIT_TABLE", "").strip()
    return Settings(audit_table=table or None)
