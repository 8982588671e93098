"""`lab up --nodes 50 --light`: 50 SSH-reachable nodes, and `swarm lab down` leaves nothing behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from orchestrator.lab import api, host, net
from orchestrator.lab.layout import LabPaths

pytestmark = [pytest.mark.lab, pytest.mark.lab_light]
COUNT = 50


async def _hostnames(lab: api.Lab) -> dict[str, str]:
    async def one(name: str, address: str) -> tuple[str, str]:
        async with asyncssh.connect(address, username="swarm", client_keys=[str(lab.key_path)],
                                    known_hosts=str(lab.known_hosts_path),
                                    connect_timeout=20) as conn:
            result = await conn.run("hostname", check=True, timeout=20)
            return name, str(result.stdout).strip()

    pairs = await asyncio.gather(*(one(n, a) for n, a in lab.nodes.items()))
    return dict(pairs)


def _full_lab_running(paths: LabPaths) -> list[str] | None:
    """Names of a running full lab (the session fixture's), to bring back afterwards."""
    try:
        _lab, nodes, _registry = api.status(paths.root)
    except Exception:
        return None
    if _lab.light or not nodes or not all(n.sshd for n in nodes):
        return None
    return [n.name for n in nodes]


def _lab_processes(root: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,comm=,args="], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return [line for line in out if str(root) in line
            and line.split()[1] in ("sshd", "dockerd", "containerd", "docker-registr")]


def test_fifty_light_nodes_then_nothing_left(lab_lock: None) -> None:
    reason = host.check_can_run()
    if reason:
        pytest.skip(f"lab cannot run here: {reason}")
    paths = LabPaths()
    prior = _full_lab_running(paths)
    try:
        started = time.monotonic()
        lab = api.up(str(COUNT), light=True)
        assert time.monotonic() - started < 45
        assert len(lab.nodes) == COUNT
        assert asyncio.run(_hostnames(lab)) == {n: n for n in lab.nodes}
        # `swarm lab down`, as the README and the demo tell users (this session holds the lock).
        down = subprocess.run([sys.executable, "-m", "orchestrator.cli", "lab", "down"],
                              capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert net.lab_namespaces() == []
        assert not net.has_bridge()
        assert _lab_processes(paths.root) == []
    finally:
        if prior:  # the session's full lab was up: bring it back for the tests after this
            api.up(prior)
