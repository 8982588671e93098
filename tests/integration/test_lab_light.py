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

# lab_shape: it replaces the reference lab, so it runs with the other shaped labs, last
pytestmark = [pytest.mark.lab, pytest.mark.lab_light, pytest.mark.lab_shape]
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


def _lab_processes(root: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,comm=,args="], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return [line for line in out if str(root) in line
            and line.split()[1] in ("sshd", "dockerd", "containerd", "docker-registr")]


def test_fifty_light_nodes_then_nothing_left(shaped_labs: None) -> None:
    reason = host.check_can_run()
    if reason:
        pytest.skip(f"lab cannot run here: {reason}")
    paths = LabPaths()
    started = time.monotonic()
    lab = api.up(str(COUNT), light=True)
    print(f"{COUNT} light nodes up in {time.monotonic() - started:.1f}s")  # noqa: T201 (bench/ measures it)
    assert len(lab.nodes) == COUNT
    assert asyncio.run(_hostnames(lab)) == {n: n for n in lab.nodes}
    # `swarm lab down`, as the README and the demo tell users (this session holds the lock).
    down = subprocess.run([sys.executable, "-m", "orchestrator.cli", "lab", "down"],
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert net.lab_namespaces() == []
    assert not net.has_bridge()
    assert _lab_processes(paths.root) == []
