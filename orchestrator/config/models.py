"""Base class for every validated, frozen model loaded from YAML."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_duration(value: Any) -> float:
    """Seconds from 90, 90.5, "90s", "15m", "1h30m", "500ms"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        match = _DURATION.match(text)
        if text and match and any(match.groups()):
            h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
            return h * 3600 + m * 60 + s + ms / 1000
    raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]

NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"
