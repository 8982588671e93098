"""`swarm verify` against the lab: a fresh deploy conforms; staged drift is caught, named by node and check.

Other sessions deploy to the same lab at the same time, so each drift is precise (one
file, one container) on a node and path resolved at staging time, and restored in
`finally`. Verify runs use their own state directory (the protected-service record).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.clients.images import mirrored
from orchestrator.commands import to_shell
from orchestrator.config.project import load_project

REPO = Path(__file__).resolve().parents[2]
SECRETS_FILE = REPO / "examples/lab-secrets.env"
SECRET_VALUES = [line.split("=", 1)[1] for line in SECRETS_FILE.read_text().splitlines()
                 if line and not line.startswith("#")]

pytestmark = pytest.mark.lab


def swarm(lab, *args: str, state: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWARM_STATE_DIR": str(state or lab.paths.root / "state")}
    argv = [sys.executable, "-m", "orchestrator.cli", "--project", str(REPO), "-i", str(lab.inventory_path), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def node_sh(lab, node: str, *argv: str, stdin: str | None = None) -> str:
    """Run argv on the node as the deploy user (quoted once: ssh hands its command to a shell)."""
    result = subprocess.run(lab.ssh_argv(node, to_shell(argv)), capture_output=True, text=True,
                            timeout=120, input=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def deploy(lab, phase: str, deadline_s: float = 900) -> None:
    """Deploy a phase; while another session's deploy holds a node's lock (exit 4), wait for it."""
    deadline = time.monotonic() + deadline_s
    result = swarm(lab, "deploy", "--phase", phase)
    while result.returncode == 4 and time.monotonic() < deadline:
        time.sleep(2)
        result = swarm(lab, "deploy", "--phase", phase)
    ok(result)


def vault_initialized(lab) -> bool:
    addr = load_project(REPO, lab.inventory_path).inventory.spec.vault.addr
    return bool(httpx.get(f"{addr}/v1/sys/init", timeout=5).json()["initialized"])


def deploy_through(lab, last: int) -> None:
    """Phases 1..last as the README's demo does them (idempotent: a re-run changes nothing)."""
    deploy(lab, "1")
    keys = lab.paths.root / "vault-keys.json"
    if keys.exists() and not vault_initialized(lab):
        keys.rename(keys.with_name("vault-keys.stale.json"))  # left by an earlier lab
    ok(swarm(lab, "vault", "init", "--key-file", str(keys)))
    ok(swarm(lab, "secrets", "push", "--env-file", str(SECRETS_FILE)))
    for phase in range(2, last + 1):
        deploy(lab, str(phase))


@pytest.fixture(scope="module")
def deployed(lab) -> Iterator[object]:
    """Phases 1-4 of the reference fleet on the lab."""
    deploy_through(lab, 4)
    yield lab


@pytest.fixture(scope="module")
def starlord_deployed(lab) -> Iterator[object]:
    """Phases 1-3: oracle and starlord, enough for the drift staged there."""
    deploy_through(lab, 3)
    yield lab


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def verify(lab, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = swarm(lab, "verify", *args, state=state)
    for value in SECRET_VALUES:
        assert value not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def drift(result: subprocess.CompletedProcess[str], test_id: str) -> str:
    """The summary line of a failed check; asserts verify exited 1 naming it."""
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith(f"FAILED {test_id}:")]
    assert lines, f"{test_id} not reported as failed:\n{result.stdout}"
    return lines[0]


def wait_healthy(lab, node: str, container: str, deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    status = ""
    while time.monotonic() < deadline:
        status = node_sh(lab, node, "docker", "inspect", "-f",
                         "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
                         container).strip()
        if status in {"healthy", "running"}:
            return
        time.sleep(1)
    raise AssertionError(f"{container} on {node} still {status} after {deadline_s}s")


def current_release_dir(lab, node: str) -> str:
    target = node_sh(lab, node, "readlink", "/opt/ai-swarm/current").strip()
    return f"/opt/ai-swarm/{target}"


# ---------------------------------------------------------------- conforming fleet


def conforming_verify(lab, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """verify, once more after redeploying if another session changed the lab meanwhile."""
    result = verify(lab, state, *args)
    if result.returncode != 0:
        deploy_through(lab, 4 if "--limit" not in args else 3)
        result = verify(lab, state, *args)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


def junit_cases(path: Path) -> list[ET.Element]:
    cases = list(ET.parse(path).getroot().iter("testcase"))
    names = [c.get("name", "") for c in cases]
    assert len(names) == len(set(names)), "one test case per check and node"
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props.get("node") in {"oracle", "starlord", "thanos"}, case.get("name")
        assert case.find("failure") is None and case.find("error") is None, case.get("name")
    return cases


def test_control_plane_and_starlord_conform_with_junit(starlord_deployed, state: Path, tmp_path: Path) -> None:
    lab = starlord_deployed
    junit = tmp_path / "verify.xml"
    result = conforming_verify(lab, state, "--limit", "oracle,starlord", "-n", "2", "--junit", str(junit))
    assert "oracle: conforms" in result.stdout and "starlord: conforms" in result.stdout
    names = {c.get("name") for c in junit_cases(junit)}
    for check in ("test_env_files_private[starlord]", "test_release_files_match_render[oracle]",
                  "test_container_running[starlord:vllm-primary]", "test_protected_not_recreated[starlord:qdrant]",
                  "test_gpu_temperature[starlord]", "test_haproxy_vllm_pool_up[oracle:haproxy]",
                  "test_litellm_routes_chat_to_vllm[oracle:litellm]", "test_sshd_refuses_passwords[oracle]"):
        assert check in names, check
    assert not any("thanos" in str(n) for n in names)


def test_deployed_fleet_conforms(deployed, state: Path, tmp_path: Path) -> None:
    junit = tmp_path / "verify.xml"
    result = conforming_verify(deployed, state, "-n", "3", "--junit", str(junit))
    for node in ("oracle", "starlord", "thanos"):
        assert f"{node}: conforms" in result.stdout
    assert "test_container_running[thanos:vllm-backup]" in {c.get("name") for c in junit_cases(junit)}


def test_bad_input_exits_2(starlord_deployed, state: Path) -> None:
    result = verify(starlord_deployed, state, "--limit", "nosuchnode")
    assert result.returncode == 2 and "nosuchnode" in result.stderr


# ---------------------------------------------------------------- staged drift


def test_env_file_readable_is_caught(starlord_deployed, state: Path) -> None:
    lab = starlord_deployed
    env_file = f"{current_release_dir(lab, 'starlord')}/env/vllm-primary.env"
    node_sh(lab, "starlord", "chmod", "644", env_file)
    try:
        result = verify(lab, state, "--limit", "starlord")
    finally:
        node_sh(lab, "starlord", "chmod", "600", env_file)
    assert "mode 0644, expected 0600" in drift(result, "test_env_files_private[starlord]")
    assert "readable by others" in drift(result, "test_no_secret_file_readable_by_others[starlord]")


def test_container_outside_the_project_is_caught(starlord_deployed, state: Path) -> None:
    lab = starlord_deployed
    name = "swarm-verify-intruder"
    image = mirrored("qdrant/qdrant:v1.9.2", lab.registry)
    node_sh(lab, "starlord", "docker", "run", "-d", "--name", name, "-p", "16399:6333", image)
    try:
        result = verify(lab, state, "--limit", "starlord")
    finally:
        node_sh(lab, "starlord", "docker", "rm", "-f", name)
    assert "port 16399" in drift(result, "test_no_unknown_listeners[starlord]")
    assert name in drift(result, "test_no_foreign_containers[starlord]")


def test_stopped_service_is_caught(starlord_deployed, state: Path) -> None:
    lab = starlord_deployed
    container = "swarm-starlord-gpu-monitor-1"
    node_sh(lab, "starlord", "docker", "stop", container)
    try:
        result = verify(lab, state, "--limit", "starlord")
    finally:
        node_sh(lab, "starlord", "docker", "start", container)
        wait_healthy(lab, "starlord", container)
    assert "exited" in drift(result, "test_container_running[starlord:gpu-monitor]")


def test_edited_config_file_is_caught(starlord_deployed, state: Path) -> None:
    lab = starlord_deployed
    path = f"{current_release_dir(lab, 'oracle')}/config/prometheus/alerts.yml"
    original = node_sh(lab, "oracle", "cat", path)
    node_sh(lab, "oracle", "sh", "-c", 'echo "# edited by hand" >> "$1"', "sh", path)
    try:
        result = verify(lab, state, "--limit", "oracle")
    finally:
        node_sh(lab, "oracle", "sh", "-c", 'cat > "$1"', "sh", path, stdin=original)
    line = drift(result, "test_release_files_match_render[oracle]")
    assert "current/config/prometheus/alerts.yml differs" in line


def test_recreated_protected_service_is_caught(starlord_deployed, state: Path) -> None:
    lab = starlord_deployed
    first = verify(lab, state, "--limit", "starlord")  # records the container seen now
    assert "FAILED test_protected_not_recreated" not in first.stdout, first.stdout
    compose = f"{current_release_dir(lab, 'starlord')}/compose.yml"
    node_sh(lab, "starlord", "docker", "compose", "-p", "swarm-starlord", "-f", compose,
            "up", "-d", "--no-deps", "--force-recreate", "qdrant")
    wait_healthy(lab, "starlord", "swarm-starlord-qdrant-1")
    result = verify(lab, state, "--limit", "starlord")
    assert "recreated since the last verify" in drift(result, "test_protected_not_recreated[starlord:qdrant]")
    again = verify(lab, state, "--limit", "starlord")  # the new container is the baseline now
    assert "FAILED test_protected_not_recreated" not in again.stdout, again.stdout


def test_image_digest_is_checked_against_the_release_pin(starlord_deployed, state: Path) -> None:
    """The digest the node's release pinned (what the deploy ran) is the one verify holds the
    running container to; a release record naming another digest is drift."""
    lab = starlord_deployed
    result = verify(lab, state, "--limit", "starlord")
    assert "FAILED test_container_image" not in result.stdout, result.stdout
    path = f"{current_release_dir(lab, 'starlord')}/release.json"
    original = node_sh(lab, "starlord", "cat", path)
    record = json.loads(original)
    pinned = record["images"]["qdrant"]
    record["images"]["qdrant"] = pinned.rpartition("@")[0] + "@sha256:" + "0" * 64
    node_sh(lab, "starlord", "sh", "-c", 'cat > "$1"', "sh", path, stdin=json.dumps(record))
    try:
        result = verify(lab, state, "--limit", "starlord")
    finally:
        node_sh(lab, "starlord", "sh", "-c", 'cat > "$1"', "sh", path, stdin=original)
    line = drift(result, "test_container_image[starlord:qdrant]")
    assert "is not the one preflight verified" in line and "0" * 64 in line
