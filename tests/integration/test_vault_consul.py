"""Vault and Consul in a lab deploy: registrations follow health, and Vault trouble stops a deploy
before any node changes.

Consul and Vault here are the lab's stand-ins (orchestrator/lab/standins), driven through the
real clients py-consul and hvac by swarm itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.labtools import (
    SECRET_VALUES,
    lab_inventory_copy,
    node_sh,
    ok,
    swarm,
    tree_hashes,
)

pytestmark = pytest.mark.lab


def consul_health(lab) -> dict[str, str]:
    """service id -> worst check status, straight from Consul's HTTP API."""
    oracle = lab.nodes["oracle"]
    checks = httpx.get(f"http://{oracle}:8500/v1/agent/checks", timeout=5).json()
    worst: dict[str, str] = {}
    rank = {"passing": 0, "warning": 1, "critical": 2}
    for check in checks.values():
        sid, status = check.get("ServiceID"), check.get("Status")
        if sid and rank.get(status, 2) >= rank.get(worst.get(sid, "passing"), 0):
            worst[sid] = status
    return worst


def wait_for(predicate, timeout: float, step: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(step)
    return last


def root_token(lab) -> str:
    return json.loads((lab.paths.root / "vault-keys.json").read_text())["root_token"]


def test_consul_lists_every_service_passing_and_follows_a_dead_container(deployed) -> None:
    lab = deployed
    expected = {"postgres", "redis", "litellm", "open-webui", "prometheus", "grafana", "haproxy",
                "qdrant", "vllm-primary", "vllm-secondary", "gpu-monitor", "vllm-backup", "sillytavern",
                "sillytavern-extras", "gpt-researcher", "doc-processor", "rag-pipeline", "thermal-monitor"}
    for phase in ("2", "3", "4"):  # a no-op deploy also puts back registrations Consul lost
        ok(swarm(lab, "deploy", "--phase", phase))
    health = wait_for(lambda: (h := consul_health(lab)) and all(h.get(s) == "passing" for s in expected) and h,
                      timeout=60)
    assert health and all(health.get(s) == "passing" for s in expected), health
    node_sh(lab, "starlord", "docker", "stop", "swarm-starlord-gpu-monitor-1")
    try:
        started = time.monotonic()
        critical = wait_for(lambda: consul_health(lab).get("gpu-monitor") == "critical", timeout=35)
        assert critical, "gpu-monitor did not turn critical within two 15 s check intervals"
        assert time.monotonic() - started <= 35
    finally:
        node_sh(lab, "starlord", "docker", "start", "swarm-starlord-gpu-monitor-1")
    assert wait_for(lambda: consul_health(lab).get("gpu-monitor") == "passing", timeout=40)


def test_wrong_vault_token_stops_the_deploy_before_any_change(deployed, tmp_path: Path) -> None:
    lab = deployed
    bad = tmp_path / "bad-token"
    bad.write_text("hvs.not-a-token")
    bad.chmod(0o600)
    inventory = lab_inventory_copy(lab, tmp_path, lambda d: (
        d["vault"].update({"token_file": str(bad)}),
        d["nodes"]["starlord"]["services"]["vllm-secondary"].update({"max_num_seqs": 3})))
    before = tree_hashes(lab, "starlord")
    result = swarm(lab, "deploy", "--phase", "3", inventory=inventory)
    assert result.returncode == 1, result.stderr
    assert "198.18.1.1:8200" in result.stderr and "permission" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert tree_hashes(lab, "starlord") == before


def test_sealed_vault_stops_the_deploy_with_what_to_do(deployed, tmp_path: Path) -> None:
    lab = deployed
    oracle = lab.nodes["oracle"]
    inventory = lab_inventory_copy(lab, tmp_path, lambda d: d["nodes"]["starlord"]["services"]["vllm-secondary"]
                                   .update({"max_num_seqs": 3}))
    before = tree_hashes(lab, "starlord")
    httpx.put(f"http://{oracle}:8200/v1/sys/seal", headers={"X-Vault-Token": root_token(lab)}, timeout=5)
    try:
        result = swarm(lab, "deploy", "--phase", "3", inventory=inventory)
        assert result.returncode == 1, result.stderr
        assert "sealed" in result.stderr and "unseal" in result.stderr
        assert tree_hashes(lab, "starlord") == before
    finally:
        ok(swarm(lab, "vault", "unseal", "--key-file", str(lab.paths.root / "vault-keys.json")))


def test_failed_phase_leaves_consul_as_it_was(deployed, tmp_path: Path) -> None:
    lab = deployed
    oracle = lab.nodes["oracle"]
    before = httpx.get(f"http://{oracle}:8500/v1/agent/services", timeout=5).json()
    inventory = lab_inventory_copy(lab, tmp_path, lambda d: d["nodes"]["starlord"]["services"]["vllm-primary"]
                                   .update({"image_tag": "v0.6.3-broken", "healthy_deadline": "15s"}))
    result = swarm(lab, "deploy", "--phase", "3", inventory=inventory)
    assert result.returncode == 1, result.stderr
    after = httpx.get(f"http://{oracle}:8500/v1/agent/services", timeout=5).json()
    assert after == before
    for value in SECRET_VALUES:
        assert value not in result.stdout + result.stderr
