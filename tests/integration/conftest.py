"""Integration fixtures: the lab (oracle, starlord, thanos), up once per session.

Tests marked `lab` use the `lab` fixture (an `orchestrator.lab.api.Lab`): inventory
path, key, known_hosts, node addresses, `exec_on`, `set_gpu`, `cut_link`... The lab is
brought up on first use and down at the end of the session. It is skipped — with the
reason — only where it cannot run: not root, or no Linux namespaces. A healthy lab that
is already up (same three nodes) is reused and left running; set `SWARM_LAB_KEEP=1` to
leave the one this session brings up running too (for poking at it, or a faster rerun).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import SwarmError
from orchestrator.lab import api, host, lock
from tests.integration.labtools import deployed  # noqa: F401 - the deployed-fleet fixture

LAB_NODES = ("oracle", "starlord", "thanos")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs the local lab (root, namespaces)")
    config.addinivalue_line("markers", "lab_light: brings up 50 SSH-only lab nodes")


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
    try:
        yield started
    finally:
        if not os.environ.get("SWARM_LAB_KEEP"):
            started.down()


@pytest.fixture(scope="session")
def lab_inventory(lab: api.Lab) -> Path:
    """The inventory `lab up` wrote: the fleet on lab addresses, lab key and known_hosts."""
    return lab.inventory_path
