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
def lab_restored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
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
    locked = [s.name for s in lab.specs if not s.light
              and faults.sh(lab, s.name, f"test -d {faults.ROOT}/.lock && echo locked || true").strip()]
    if locked:  # a failed test left a run cut off: finish it as an operator would, then unlock
        state = tmp_path / "state"  # the test's `state` fixture (torn down by now; its files stay)
        state.mkdir(exist_ok=True)
        faults.swarm(lab, lab.inventory_path, "rollback", "--resume", state=state, timeout=300)
        faults.swarm(lab, lab.inventory_path, "unlock", "--limit", ",".join(locked), state=state,
                     timeout=120, json_output=False)
