"""Preflight against the lab: everything passes on the deployed reference fleet, then each
staged fault is caught on the right node with a message that names it.

Faults: an amd64-only image moved to oracle (arm64), starlord's GPU at 90 °C, a foreign
container on a port the phase publishes, a secret deleted from Vault, the protected Qdrant
stopped, and the thanos <-> oracle link cut. Every fault is undone in a `finally`. The
checks run in-process through the `swarm preflight` click command (JSON output); the
deploy's own use of them (facts in its first command) is in tests/unit/engine and the
fault suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.config.project import load_project
from orchestrator.lab.api import Lab

REPO = Path(__file__).resolve().parents[2]
SECRETS_FILE = REPO / "examples/lab-secrets.env"
SQUATTER = "swarm-preflight-squatter"

pytestmark = pytest.mark.lab

# --- the lab, deployed ------------------------------------------------------------------------


def deploy(lab: Lab, phase: str, timeout: float = 240) -> None:
    """Deploy a phase; while another test session's deploy holds the lock (exit 4), wait."""
    deadline, pause = time.monotonic() + timeout, 2.0
    while True:
        done = swarm_cmd(lab, "deploy", "--phase", phase, check=False)
        if done.returncode != 4 or time.monotonic() > deadline:
            break
        time.sleep(pause)
        pause = min(pause * 1.5, 15)
    assert done.returncode == 0, f"deploy {phase}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def swarm_cmd(lab: Lab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWARM_STATE_DIR": str(lab.paths.root / "state")}
    keys = lab.paths.root / "vault-keys.json"
    if keys.exists():
        env.setdefault("VAULT_TOKEN", json.loads(keys.read_text())["root_token"])
    argv = [sys.executable, "-m", "orchestrator.cli", "--project", str(REPO), "-i", str(lab.inventory_path), *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert done.returncode == 0 or not check, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The lab with phases 1-4 deployed (a no-op when the deploy tests did it already)."""
    lab = request.getfixturevalue("lab")
    keys = lab.paths.root / "vault-keys.json"
    deploy(lab, "1")
    if keys.exists() and not vault_initialized(lab):
        keys.rename(keys.with_name("vault-keys.stale.json"))  # left by an earlier lab
    swarm_cmd(lab, "vault", "init", "--key-file", str(keys))
    swarm_cmd(lab, "secrets", "push", "--env-file", str(SECRETS_FILE))
    for phase in ("2", "3", "4"):
        deploy(lab, phase)
    old = os.environ.get("VAULT_TOKEN")
    if "VAULT_TOKEN" not in os.environ:
        os.environ["VAULT_TOKEN"] = json.loads(keys.read_text())["root_token"]
    try:
        yield lab
    finally:
        if old is None:
            os.environ.pop("VAULT_TOKEN", None)


def vault_initialized(lab: Lab) -> bool:
    addr = load_project(REPO, lab.inventory_path).inventory.spec.vault.addr
    return bool(httpx.get(f"{addr}/v1/sys/init", timeout=5).json()["initialized"])


def preflight(lab: Lab, *args: str, inventory: Path | None = None) -> tuple[int, dict[str, Any]]:
    argv = ["--project", str(REPO), "-i", str(inventory or lab.inventory_path), "preflight",
            "--output", "json", *args]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.output)


def failures(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["results"] if r["status"] == "fail"]


def only_failure(report: dict[str, Any], check: str) -> dict[str, Any]:
    failed = failures(report)
    assert [r["check"] for r in failed] == [check], json.dumps(failed, indent=1)
    return failed[0]


def node_sh(lab: Lab, node: str, *argv: str, check: bool = True) -> str:
    done = subprocess.run(lab.ssh_argv(node, *argv), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 or not check, done.stderr
    return done.stdout


def copy_yaml(source: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(source.read_text())
    change(data)
    path = tmp_path / source.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wait_until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline, pause = time.monotonic() + timeout, 0.2
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the lab to recover"
        time.sleep(pause)
        pause = min(pause * 2, 2)


# --- the healthy fleet ---------------------------------------------------------------------


def test_every_check_passes_on_the_deployed_fleet(fleet: Lab) -> None:
    code, report = preflight(fleet)
    backups = {r["subject"]: r for r in report["results"] if r["check"] == "backup"}
    problems = [r for r in report["results"] if r["status"] != "pass" and r["check"] != "backup"]
    # The optional overflow node is off in the lab: named once (its connect window, not a
    # 3 s wait), and the one link to it — Prometheus scrapes its backup-router — is named,
    # not probed from oracle.
    assert sorted((r["node"], r["subject"]) for r in problems) == [
        ("oracle", "overflow:4000 (backup-router)"), ("overflow", "login")], json.dumps(problems, indent=1)
    assert all(r["status"] == "warn" for r in problems)
    assert "optional overflow is off" in next(r["message"] for r in problems if r["node"] == "oracle")
    # Each stateful service is checked for a fresh backup; whether the lab holds one depends on
    # which tests ran before, so: fresh (pass), or none at all (warn, never fail).
    assert sorted(backups) == ["postgres", "qdrant", "redis", "vault"], json.dumps(backups, indent=1)
    assert all(r["status"] == "pass" or (r["status"] == "warn" and "has no backup" in r["message"])
               for r in backups.values()), json.dumps(backups, indent=1)
    assert code == 0
    checks = {r["check"] for r in report["results"]}
    assert {"ssh", "arch", "docker", "compose", "disk", "image", "gpu-thermal", "gpu-free-vram",
            "gpu-runtime", "port", "protected", "secrets", "network", "backup"} <= checks
    assert {r["node"] for r in report["results"]} == {"oracle", "starlord", "thanos", "overflow"}
    assert [r["check"] for r in report["results"] if r["node"] == "overflow"] == ["ssh"]
    assert all(r["duration_s"] > 0 for r in report["results"] if r["check"] in ("ssh", "image"))
    assert all("@sha256:" in pin for pin in report["pins"].values()) and report["pins"]
    assert not any(v in json.dumps(report) for v in secret_values())


def secret_values() -> list[str]:
    lines = SECRETS_FILE.read_text().splitlines()
    return [line.split("=", 1)[1] for line in lines if "=" in line and not line.startswith("#")]


# --- staged faults ---------------------------------------------------------------------------


def test_amd64_only_image_moved_to_oracle(fleet: Lab, tmp_path: Path) -> None:
    def move_extras(book: dict[str, Any]) -> None:
        phase4 = next(p for p in book["phases"] if p["id"] == 4)
        extras = next(s for s in phase4["services"] if s["name"] == "sillytavern-extras")
        extras["host"] = "oracle"

    playbook = copy_yaml(REPO / "playbooks/ai-swarm.yml", tmp_path, move_extras)
    code, report = preflight(fleet, "--phase", "4", "--limit", "oracle", "--playbook", str(playbook))
    failed = only_failure(report, "image")
    assert code == 1 and failed["node"] == "oracle"
    assert failed["subject"] == "198.18.0.1:5000/sillytavern/sillytavern-extras:latest"
    assert "has no linux/arm64 variant" in failed["message"]
    assert "it offers linux/amd64" in failed["message"]


def test_smoke_runs_the_version_command_on_the_nodes_platform(fleet: Lab, tmp_path: Path) -> None:
    def only_redis(book: dict[str, Any]) -> None:
        phase2 = next(p for p in book["phases"] if p["id"] == 2)
        phase2["services"] = [s for s in phase2["services"] if s["name"] == "redis"]

    def no_litellm_settings(inv: dict[str, Any]) -> None:  # its service is not in this playbook
        inv["nodes"]["oracle"].pop("services", None)

    playbook = copy_yaml(REPO / "playbooks/ai-swarm.yml", tmp_path, only_redis)
    (tmp_path / "inventory").mkdir()  # the lab inventory's files are named by absolute paths
    inventory = copy_yaml(fleet.inventory_path, tmp_path / "inventory", no_litellm_settings)
    code, report = preflight(fleet, "--phase", "2", "--smoke", "--playbook", str(playbook), inventory=inventory)
    [smoke] = [r for r in report["results"] if r["check"] == "smoke"]
    assert code == 0 and smoke["status"] == "pass" and smoke["node"] == "oracle", smoke
    assert "runs on linux/arm64: Redis server v=" in smoke["message"]


def test_hot_gpu_on_starlord(fleet: Lab) -> None:
    try:
        fleet.set_gpu("starlord", 0, temperature=90)
        code, report = preflight(fleet, "--phase", "3")
    finally:
        fleet.set_gpu("starlord", 0, temperature=41)
    failed = only_failure(report, "gpu-thermal")
    assert code == 1 and failed["node"] == "starlord" and failed["subject"] == "GPU 0"
    assert "is at 90 °C, limit 85 °C" in failed["message"]


def test_port_taken_by_a_foreign_container(fleet: Lab, tmp_path: Path) -> None:
    def move_port(inv: dict[str, Any]) -> None:
        inv["nodes"]["thanos"].setdefault("services", {}).setdefault("sillytavern", {})["port"] = 18080

    inventory = copy_yaml(fleet.inventory_path, tmp_path, move_port)
    image = "198.18.0.1:5000/sillytavern/sillytavern:1.12.6"
    try:
        node_sh(fleet, "thanos", "docker", "run", "-d", "--rm", "--name", SQUATTER,
                "-p", "18080:8000", image)
        code, report = preflight(fleet, "--phase", "4", "--limit", "thanos", inventory=inventory)
    finally:
        node_sh(fleet, "thanos", "docker", "rm", "-f", SQUATTER, check=False)
    failed = only_failure(report, "port")
    assert code == 1 and failed["node"] == "thanos" and failed["subject"] == "18080/tcp (sillytavern)"
    assert f"taken by container {SQUATTER}" in failed["message"]


def vault_client(lab: Lab) -> Any:
    from orchestrator.clients.vault import connect

    token = json.loads((lab.paths.root / "vault-keys.json").read_text())["root_token"]
    project = load_project(REPO, lab.inventory_path)
    return connect(project.inventory.spec.vault.addr, token=token)


def test_missing_vault_secret(fleet: Lab) -> None:
    client = vault_client(fleet)
    path = "ai-swarm/vllm"
    original = client.read_secrets("secret", path)
    try:
        kept = {k: v for k, v in original.items() if k != "api_key"}
        client.write_secrets("secret", path, kept, cas=client.current_version("secret", path))
        code, report = preflight(fleet, "--phase", "3")
    finally:
        client.write_secrets("secret", path, original, cas=client.current_version("secret", path))
    failed = [r for r in failures(report) if r["check"] == "secrets"]
    assert code == 1 and [(r["node"], r["subject"]) for r in failed] == [("starlord", "vllm_api_key")]
    assert "secret/ai-swarm/vllm key api_key" in failed[0]["message"]
    assert "vllm-primary, vllm-secondary" in failed[0]["message"]
    assert not any(v in json.dumps(report) for v in secret_values())


def collections_answer(lab: Lab) -> bool:
    try:
        return httpx.get(f"http://{lab.nodes['starlord']}:6333/collections", timeout=2).is_success
    except httpx.HTTPError:
        return False


def test_stopped_qdrant(fleet: Lab) -> None:
    name = "swarm-starlord-qdrant-1"
    try:
        node_sh(fleet, "starlord", "docker", "stop", name)
        code, report = preflight(fleet, "--phase", "3", "--limit", "starlord")
    finally:
        node_sh(fleet, "starlord", "docker", "start", name)
        wait_until(lambda: collections_answer(fleet))
    failed = only_failure(report, "protected")
    assert code == 1 and failed["node"] == "starlord" and failed["subject"] == "qdrant"
    assert f"container {name} is exited" in failed["message"]
    assert f"docker start {name}" in failed["hint"]


def test_thanos_cut_off_from_oracle(fleet: Lab) -> None:
    try:
        fleet.cut_link("thanos", "oracle")
        code, report = preflight(fleet, "--phase", "4", "--limit", "thanos")
    finally:
        fleet.restore_link("thanos", "oracle")
    failed = [r for r in failures(report) if r["check"] == "network"]
    assert code == 1 and failed and {r["node"] for r in failed} == {"thanos"}
    assert {r["subject"] for r in failed} == {"oracle:80 (haproxy)"}  # clients use the front door
    assert "thanos cannot reach oracle at " in failed[0]["message"]
    assert [r for r in failures(report) if r["check"] != "network"] == []
