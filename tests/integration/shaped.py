"""Helpers for the lab tests that bring up a lab of another shape than the reference fleet's:
the four example projects (`test_example_*.py`, one lab shape per module) and the reference
fleet with its optional overflow node (`test_phase5_overflow.py`).

Such a module is marked `lab_shape`: tests/conftest.py runs those modules after every other
lab test of the session (they replace the session's 3-node lab), and its `shaped_labs`
fixture leaves the machine's lab as the session found it. Each module brings its lab up once
and deploys once, as `make demo EXAMPLE=<name>` does (`deploy_example`); its tests then use
the deployed stack as a user would.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from orchestrator.lab import api
from tests.integration.labtools import short_holds

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NO_PROXY = {"trust_env": False}


def env_values(name: str) -> dict[str, str]:
    lines = (EXAMPLES / name / "lab-secrets.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def project_root(name: str) -> Path:
    return REPO if name == "reference" else EXAMPLES / name


def swarm(lab: api.Lab, name: str, *args: str, inventory: Path | None = None,
          timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`swarm --project <name's project> -i <lab inventory> ARGS`, as an operator runs it."""
    env = {**os.environ, "SWARM_STATE_DIR": str(lab.paths.root / "state")}
    argv = [sys.executable, "-m", "orchestrator.cli", "--project", str(project_root(name)),
            "-i", str(inventory or lab.inventory_path), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def node_sh(lab: api.Lab, node: str, *argv: str) -> str:
    result = subprocess.run(lab.ssh_argv(node, shlex.join(argv)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not seen within {seconds:g}s"
        time.sleep(0.5)


def client() -> httpx.Client:
    return httpx.Client(timeout=60, **NO_PROXY)  # type: ignore[arg-type]


def deploy_example(name: str, nodes: list[str] | None = None) -> api.Lab:
    """What `make demo EXAMPLE=name` does, up to verify: a lab in the shape of the project's
    inventory (or of `nodes`), phase 1, Vault initialised, the lab secrets pushed, every phase."""
    source = project_root(name) / "inventory" / "swarm.yml"
    lab = api.up(nodes, source_inventory=source)
    secrets = (EXAMPLES / "lab-secrets.env" if name == "reference"
               else EXAMPLES / name / "lab-secrets.env")
    quick = quick_lab_inventory(lab)
    ok(swarm(lab, name, "deploy", "--phase", "1", inventory=quick))
    ok(swarm(lab, name, "vault", "init", "--key-file", str(lab.paths.root / "vault-keys.json")))
    ok(swarm(lab, name, "secrets", "push", "--env-file", str(secrets)))
    ok(swarm(lab, name, "deploy", inventory=quick))  # every phase in order (an optional one when its node is up)
    return lab


def quick_lab_inventory(lab: api.Lab) -> Path:
    """The lab's inventory with every service held SHORT_HOLD by the gate instead of its phase's
    5-15 s (labtools.short_holds): the modules prove the deployed stack as a user uses it, not
    the holds; the releases are the lab inventory's byte for byte."""
    data = yaml.safe_load(lab.inventory_path.read_text())
    short_holds(data)
    path = lab.paths.root / "quick-inventory.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def verify_passes(lab: api.Lab, name: str, *args: str) -> None:
    result = swarm(lab, name, "verify", *args)
    assert result.returncode == 0, f"swarm verify of {name}:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
