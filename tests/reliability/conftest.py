"""The fault suite runs on the deployed lab fleet (fixtures in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """The controller's state dir for one test (its audit log, any pending unwind)."""
    path = tmp_path / "state"
    path.mkdir()
    yield path
