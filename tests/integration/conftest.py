"""Integration fixtures: the lab (oracle, starlord, thanos), up once per session.

Tests marked `lab` use the `lab` fixture (an `orchestrator.lab.api.Lab`): inventory
path, key, known_hosts, node addresses, `exec_on`, `set_gpu`, `cut_link`... The lab is
brought up on first use and down at the end of the session. It is skipped — with the
reason — only where it cannot run: not root, or no Linux namespaces. Set
`SWARM_LAB_KEEP=1` to leave it running after the session (for poking at it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.lab import api, host

LAB_NODES = ("oracle", "starlord", "thanos")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs the local lab (root, namespaces)")
    config.addinivalue_line("markers", "lab_light: brings up 50 SSH-only lab nodes")


def lab_skip_reason() -> str | None:
    reason = host.check_can_run()
    return f"lab cannot run here: {reason}" if reason else None


@pytest.fixture(scope="session")
def lab() -> Iterator[api.Lab]:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    running = api.up(list(LAB_NODES))
    try:
        yield running
    finally:
        if not os.environ.get("SWARM_LAB_KEEP"):
            running.down()


@pytest.fixture(scope="session")
def lab_inventory(lab: api.Lab) -> Path:
    """The inventory `lab up` wrote: the fleet on lab addresses, lab key and known_hosts."""
    return lab.inventory_path
