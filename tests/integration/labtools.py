"""Shared helpers for the lab integration tests: run swarm as an operator would, look at nodes."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SECRETS_FILE = REPO / "examples/lab-secrets.env"
SECRET_VALUES = [line.split("=", 1)[1] for line in SECRETS_FILE.read_text().splitlines()
                 if line and not line.startswith("#")]

def swarm(lab, *args: str, inventory: Path | None = None, env: dict[str, str] | None = None,
          timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SWARM_STATE_DIR": str(lab.paths.root / "state"), **(env or {})}
    argv = [sys.executable, "-m", "orchestrator.cli", "--project", str(REPO),
            "-i", str(inventory or lab.inventory_path), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def node_sh(lab, node: str, *argv: str) -> str:
    """Run argv on a node over ssh (quoted: ssh hands the remote shell one string)."""
    result = subprocess.run(lab.ssh_argv(node, shlex.join(argv)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


NODE_GET = """
import sys, urllib.error, urllib.request
try:
    reply = urllib.request.urlopen(sys.argv[1], timeout=10)
    print(reply.status); print(reply.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code); print(exc.read().decode())
"""


def node_get(lab, node: str, url: str) -> tuple[int, str]:
    """GET `url` from inside the node (its own loopback: ports published for the node only)."""
    done = lab.exec_on(node, [sys.executable, "-c", NODE_GET, url])
    status, _, body = done.stdout.partition("\n")
    return int(status), body


def container_ids(lab, node: str) -> dict[str, str]:
    out = node_sh(lab, node, "docker", "ps", "--filter", f"label=com.docker.compose.project=swarm-{node}",
                  "--format", '{{.Label "com.docker.compose.service"}} {{.ID}}')
    return dict(line.split() for line in out.splitlines() if line.strip())


def tree_hashes(lab, node: str) -> str:
    return node_sh(lab, node, "sh", "-c", "cd /opt/ai-swarm && find . -type f ! -name audit.log | sort | xargs sha256sum")


def lab_inventory_copy(lab, tmp_path: Path, change, name: str = "lab-inventory.yml") -> Path:
    data = yaml.safe_load(lab.inventory_path.read_text())
    change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


SHORT_HOLD = "2s"  # the fault suite's hold (tests/reliability/faults.py fast_inventory)


def short_holds(data: dict) -> None:  # type: ignore[type-arg]
    """Every node's services held SHORT_HOLD by the gate instead of their phase's 5-15 s."""
    for node in data["nodes"].values():
        node.setdefault("vars", {})["min_healthy_time"] = SHORT_HOLD


def quick_inventory(lab, tmp_path: Path, change=None, name: str = "quick-inventory.yml") -> Path:
    """The lab inventory (with `change`) whose gate holds every service SHORT_HOLD: for the deploys
    and rollbacks of a test that proves what changed, not how long the gate watches it (the hold's
    own tests set theirs). `min_healthy_time` is no part of a release's files, so a release made
    with this inventory is the lab inventory's byte for byte: a later deploy with that one is a
    no-op."""
    def both(data: dict) -> None:  # type: ignore[type-arg]
        short_holds(data)
        if change is not None:
            change(data)

    return lab_inventory_copy(lab, tmp_path, both, name)


@pytest.fixture(scope="module")
def deployed(lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Phases 1-4 of the reference fleet on the lab, in the README demo's order (phase 1, Vault,
    the secrets, phases 2-4 in one run); a no-op where an earlier module left it so, else it
    converges the fleet back. The deploys hold each service SHORT_HOLD (`quick_inventory`): the
    releases are the lab inventory's, the 5-15 s holds of the first deploy and of each
    convergence were ~1 min of the lab suite, and the README's own commands keep theirs
    (test_readme_commands.py)."""
    inventory = quick_inventory(lab, tmp_path_factory.mktemp("deployed"))
    ok(swarm(lab, "deploy", "--phase", "1", inventory=inventory))
    ok(swarm(lab, "vault", "init", "--key-file", str(lab.paths.root / "vault-keys.json")))
    ok(swarm(lab, "secrets", "push", "--env-file", str(SECRETS_FILE)))
    ok(swarm(lab, "deploy", "--phase", "2-4", inventory=inventory))
    yield lab
