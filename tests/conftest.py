"""Shared fixtures: a throw-away copy of the project to mutate in tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A copy of inventory/, playbooks/, roles/ and examples/ that a test may edit."""
    root = tmp_path / "proj"
    for part in ("inventory", "playbooks", "roles", "examples"):
        shutil.copytree(REPO / part, root / part)
    return root


@pytest.fixture
def edit_yaml() -> Callable[[Path, Callable[[dict], None]], None]:
    def edit(path: Path, change: Callable[[dict], None]) -> None:
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit
