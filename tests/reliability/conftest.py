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


@pytest.fixture(autouse=True)
def lab_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each fault test, every node's link is up and its sshd answers, whatever the test
    did or where it failed: one failed test must not fail the ones after it."""
    yield
    if "deployed" not in request.fixturenames:
        return
    from tests.reliability import faults

    lab = request.getfixturevalue("deployed")
    for spec in lab.specs:
        if spec.light:
            continue
        faults.link_up(lab, spec.name)
        if not faults.answers(lab, spec.name):
            faults.start_sshd(lab, spec.name)
