"""Shared fixtures: a throw-away copy of the project to mutate in tests, and the lab.

The lab (oracle, starlord, thanos) is brought up once per session for the tests marked
`lab` (tests/integration, tests/reliability): skipped — with the reason — only where it
cannot run (not root, no namespaces). A healthy lab that is already up is reused and left
running; `SWARM_LAB_KEEP=1` leaves the one this session brings up running too. The session
holds the machine's lab lock, so two sessions never share (or tear down) one lab.

Modules marked `lab_shape` bring up labs of other shapes (the example projects, the
reference fleet with its overflow node): they run after every other test of the session,
and `shaped_labs` leaves the machine's lab as the session found it. `make test` runs them
all; `make examples` only the example projects' modules."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.errors import SwarmError
from orchestrator.lab import api, host, lock
from tests.integration.labtools import deployed  # noqa: F401 - the deployed-fleet fixture

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


# ---------------------------------------------------------------- the lab (integration + reliability)

LAB_NODES = ("oracle", "starlord", "thanos")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs the local lab (root, namespaces)")
    config.addinivalue_line("markers", "lab_light: brings up 50 SSH-only lab nodes")
    config.addinivalue_line("markers", "lab_shape: brings up a lab of another shape (runs last)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that replace the session's lab with another shape run last (stable: a module's
    tests stay together and in order), so the reference lab is brought up and deployed once."""
    items[:] = ([i for i in items if i.get_closest_marker("lab_shape") is None]
                + [i for i in items if i.get_closest_marker("lab_shape") is not None])


def lab_skip_reason() -> str | None:
    reason = host.check_can_run()
    return f"lab cannot run here: {reason}" if reason else None


def running_lab() -> api.Lab | None:
    """A healthy lab with exactly LAB_NODES that is already up (another session's)."""
    try:
        found, nodes, registry_up = api.status()
    except SwarmError:
        return None
    healthy = registry_up and all(n.sshd and n.dockerd for n in nodes)
    return found if healthy and tuple(found.nodes) == LAB_NODES else None


@pytest.fixture(scope="session")
def lab_lock() -> Iterator[None]:
    """The machine's one lab, held for this whole session (other sessions wait)."""
    with lock.hold(f"pytest session {os.getpid()}", say=print):
        yield


_OWNED: list[api.Lab] = []  # the reference lab this session's `lab` fixture brought up


@pytest.fixture(scope="session")
def lab(lab_lock: None) -> Iterator[api.Lab]:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    existing = running_lab()
    if existing is not None:  # reuse it, and leave it to whoever brought it up
        yield existing
        return
    started = api.up(list(LAB_NODES))
    _OWNED.append(started)
    try:
        yield started
    finally:
        if not os.environ.get("SWARM_LAB_KEEP"):
            started.down()


@pytest.fixture(scope="session")
def shaped_labs(lab_lock: None) -> Iterator[None]:
    """For the `lab_shape` modules (each brings up its own lab, replacing the one running):
    at the end of the session the machine's lab is as the session found it. A reference lab
    that was up (another session's, or kept with SWARM_LAB_KEEP) comes back, undeployed, in
    one `lab up`; one this session started is left to the `lab` fixture's teardown; else the
    last shaped lab goes down unless SWARM_LAB_KEEP=1."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    was_up = running_lab() is not None
    yield
    keep = bool(os.environ.get("SWARM_LAB_KEEP"))
    if _OWNED and not keep:
        return  # the `lab` fixture takes the lab down after this
    if was_up:
        api.up(list(LAB_NODES))
    elif not keep:
        api.down()


@pytest.fixture(scope="session")
def lab_inventory(lab: api.Lab) -> Path:
    """The inventory `lab up` wrote: the fleet on lab addresses, lab key and known_hosts."""
    return lab.inventory_path
