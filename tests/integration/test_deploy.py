"""The deploy engine against the lab: phases 1-4 end healthy, no-op re-runs, rollback, locks, --check.

These run `swarm` as an operator would (a subprocess with the lab inventory) and look at
the nodes through SSH and HTTP on their lab addresses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.labtools import (
    REPO,
    SECRET_VALUES,
    container_ids,
    lab_inventory_copy,
    node_get,
    node_sh,
    ok,
    quick_inventory,
    swarm,
    tree_hashes,
)

pytestmark = pytest.mark.lab


def test_full_deploy_is_healthy_on_every_node(deployed) -> None:
    lab = deployed
    starlord, oracle, thanos = (lab.nodes[n] for n in ("starlord", "oracle", "thanos"))
    assert httpx.get(f"http://{starlord}:8000/health", timeout=5).status_code == 200
    models = httpx.get(f"http://{starlord}:8001/v1/models", headers={"Authorization": "Bearer lab-vllm-key-d81f2c6b"},
                       timeout=5).json()
    assert models["data"][0]["id"] == "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
    # internal services answer on oracle itself (and through the front door), not on its address
    assert node_get(lab, "oracle", "http://127.0.0.1:8888/stats")[0] == 200
    assert node_get(lab, "oracle", "http://127.0.0.1:4000/health/liveliness")[0] == 200
    assert httpx.get(f"http://{oracle}/health/liveliness", timeout=5).status_code == 200
    assert httpx.get(f"http://{thanos}:8002/health", timeout=5).status_code == 200
    env_mode = node_sh(lab, "starlord", "sh", "-c", "stat -c %a /opt/ai-swarm/current/env/vllm-primary.env")
    assert env_mode.strip() == "600"


def test_second_run_changes_nothing_and_restarts_nothing(deployed) -> None:
    lab = deployed
    before = container_ids(lab, "starlord")
    result = ok(swarm(lab, "deploy", "--phase", "3", "--output", "json"))
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(e["kind"] == "run" and e["state"] == "unchanged" for e in events)
    assert not any(e["kind"] in {"apply", "lock"} for e in events)
    assert container_ids(lab, "starlord") == before


def test_a_config_only_change_reloads_that_service_in_place(deployed, tmp_path: Path) -> None:
    """HAProxy's rate limit is in its config only: no container is recreated (the front door keeps
    its listeners), the files it reads are the new ones, and its master started a new worker."""
    lab = deployed
    inventory = quick_inventory(lab, tmp_path, lambda d: d["nodes"]["oracle"].setdefault("services", {})
                                .setdefault("haproxy", {}).update({"rate_limit_per_10s": 77}))
    before = container_ids(lab, "oracle")
    result = ok(swarm(lab, "deploy", "--phase", "2", inventory=inventory))
    assert container_ids(lab, "oracle") == before
    assert "haproxy reloaded its config" in result.stdout + result.stderr
    for path in ("current/config/haproxy/haproxy.cfg", "configs/haproxy/live/haproxy.cfg"):
        assert "gt 77" in node_sh(lab, "oracle", "sh", "-c", f"cat /opt/ai-swarm/{path}")


def test_check_changes_nothing_and_masks_secrets(deployed, tmp_path: Path) -> None:
    lab = deployed
    inventory = lab_inventory_copy(lab, tmp_path, lambda d: d["nodes"]["starlord"]["services"]["vllm-secondary"]
                                   .update({"max_num_seqs": 4}))
    hashes, ids = tree_hashes(lab, "starlord"), container_ids(lab, "starlord")
    result = ok(swarm(lab, "deploy", "--phase", "3", "--check", "--diff", inventory=inventory))
    assert "starlord: phase 3: would deploy a new release: vllm-secondary (changed)" in result.stdout
    assert "+    - '4'" in result.stdout or "'4'" in result.stdout
    assert tree_hashes(lab, "starlord") == hashes
    assert container_ids(lab, "starlord") == ids
    for value in SECRET_VALUES:
        assert value not in result.stdout + result.stderr


def test_broken_release_rolls_back_every_node_of_the_phase(deployed, tmp_path: Path) -> None:
    lab = deployed
    starlord = lab.nodes["starlord"]
    current_before = node_sh(lab, "starlord", "readlink", "/opt/ai-swarm/current").strip()
    # 15 s: several times what a healthy stand-in needs (docker's first 5 s health check, then the
    # 2 s hold), so only a broken image misses it
    inventory = quick_inventory(lab, tmp_path, lambda d: d["nodes"]["starlord"]["services"]["vllm-primary"]
                                .update({"image_tag": "v0.6.3-broken", "healthy_deadline": "15s"}))
    result = swarm(lab, "deploy", "--phase", "3", inventory=inventory)
    assert result.returncode == 1, result.stderr
    assert "vllm-primary on starlord" in result.stderr and "rolled back" in result.stderr
    assert "Traceback" not in result.stderr
    assert node_sh(lab, "starlord", "readlink", "/opt/ai-swarm/current").strip() == current_before
    assert httpx.get(f"http://{starlord}:8000/health", timeout=5).status_code == 200
    image = node_sh(lab, "starlord", "docker", "inspect", "-f", "{{.Config.Image}}", "swarm-starlord-vllm-primary-1")
    assert "broken" not in image
    audit = node_sh(lab, "starlord", "tail", "-n", "3", "/opt/ai-swarm/audit.log")
    assert any(json.loads(line)["action"] == "rollback" for line in audit.splitlines())


def test_rollback_on_demand_and_to_a_named_release(deployed, tmp_path: Path) -> None:
    """A rollback is a new release of the same phase running an older one's definitions:
    `current` moves forward, its record says which release it went back to."""
    lab = deployed
    first = node_sh(lab, "thanos", "readlink", "/opt/ai-swarm/current").strip().rsplit("/", 1)[-1]
    inventory = quick_inventory(lab, tmp_path, lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"]
                                .update({"max_num_seqs": 6}), name="changed.yml")
    quick = quick_inventory(lab, tmp_path)  # the shipped settings, short holds
    ok(swarm(lab, "deploy", "--phase", "4", inventory=inventory))
    second = node_sh(lab, "thanos", "readlink", "/opt/ai-swarm/current").strip().rsplit("/", 1)[-1]
    assert second != first
    release = json.loads(node_sh(lab, "thanos", "cat", "/opt/ai-swarm/current/release.json"))
    assert "@sha256:" in release["images"]["vllm-backup"]  # the digest preflight checked
    ok(swarm(lab, "rollback", "--phase", "4", inventory=quick))
    back = json.loads(node_sh(lab, "thanos", "cat", "/opt/ai-swarm/current/release.json"))
    assert back["rolled_back_to"] == first and back["previous"] == second and back["id"] > second
    cmdline = node_sh(lab, "thanos", "docker", "inspect", "-f", "{{json .Args}}", "swarm-thanos-vllm-backup-1")
    assert '"6"' not in cmdline
    listing = ok(swarm(lab, "releases", "--limit", "thanos")).stdout
    assert f"* {back['id']}" in listing and f"rollback to {first}" in listing and second in listing
    ok(swarm(lab, "rollback", "--phase", "4", "--to", second, inventory=quick))
    again = json.loads(node_sh(lab, "thanos", "cat", "/opt/ai-swarm/current/release.json"))
    assert again["rolled_back_to"] == second
    assert '"6"' in node_sh(lab, "thanos", "docker", "inspect", "-f", "{{json .Args}}", "swarm-thanos-vllm-backup-1")
    ok(swarm(lab, "deploy", "--phase", "4", inventory=quick))  # back to the shipped settings


def test_concurrent_deploy_exits_4_then_succeeds(deployed, tmp_path: Path) -> None:
    lab = deployed
    inventory = lab_inventory_copy(lab, tmp_path, lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"]
                                   .update({"max_num_seqs": 5}))
    env = {**os.environ, "SWARM_STATE_DIR": str(lab.paths.root / "state")}
    first = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "--project", str(REPO), "-i", str(inventory),
                              "deploy", "--phase", "4"], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            probe = subprocess.run(lab.ssh_argv("thanos", "test", "-d", "/opt/ai-swarm/.lock"), capture_output=True)
            if probe.returncode == 0:
                break
            time.sleep(0.2)
        second = swarm(lab, "deploy", "--phase", "4", inventory=inventory)
        assert second.returncode == 4, second.stderr
        assert "another deploy holds the lock" in second.stderr and "phase 4" in second.stderr
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    # back to the shipped settings, lock free again (the first run above kept its phase's hold:
    # it must still hold the lock while the second one looks)
    ok(swarm(lab, "deploy", "--phase", "4", inventory=quick_inventory(lab, tmp_path, name="back.yml")))


def test_secret_values_never_appear_in_any_output(deployed, tmp_path: Path) -> None:
    lab = deployed
    inventory = lab_inventory_copy(lab, tmp_path, lambda d: d["nodes"]["oracle"].setdefault("services", {})
                                   .setdefault("grafana", {}).update({"extra_env": {"GF_LOG_LEVEL": "debug"}}))
    result = ok(swarm(lab, "-vvv", "deploy", "--phase", "2", "--output", "json", inventory=inventory))
    diff = ok(swarm(lab, "deploy", "--phase", "2", "--diff", inventory=lab.inventory_path))
    local_audit = (lab.paths.root / "state/audit.log").read_text()
    node_audit = node_sh(lab, "oracle", "cat", "/opt/ai-swarm/audit.log")
    produced = result.stdout + result.stderr + diff.stdout + diff.stderr + local_audit + node_audit
    for value in SECRET_VALUES:
        assert value not in produced
    ok(swarm(lab, "deploy", "--phase", "2"))


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("deploy", "--phase", "9"), 2, "no phase 9"),
        (("deploy", "--phase", "3", "--limit", "nosuchhost"), 2, "no node or group named 'nosuchhost'"),
    ],
)
def test_bad_input_is_one_line_exit_2(lab, args: tuple[str, ...], code: int, needle: str) -> None:
    result = swarm(lab, *args)
    assert result.returncode == code and needle in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_key_is_exit_2(lab, tmp_path: Path) -> None:
    inventory = lab_inventory_copy(lab, tmp_path, lambda d: d["ssh"].update({"key": str(tmp_path / "nokey")}))
    result = swarm(lab, "deploy", "--phase", "3", inventory=inventory)
    assert result.returncode == 2 and "nokey" in result.stderr and "does not exist" in result.stderr


def test_wrong_key_is_runtime_error(lab, tmp_path: Path) -> None:
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    inventory = lab_inventory_copy(lab, tmp_path, lambda d: d["ssh"].update({"key": str(key)}))
    result = swarm(lab, "deploy", "--phase", "3", inventory=inventory)
    assert result.returncode == 1 and "rejected" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_node_is_runtime_error(lab, tmp_path: Path) -> None:
    inventory = lab_inventory_copy(lab, tmp_path, lambda d: (d["nodes"]["starlord"].update({"address": "198.18.0.250"}),
                                                             d["ssh"].update({"connect_timeout": 2})))
    result = swarm(lab, "deploy", "--phase", "3", inventory=inventory)
    assert result.returncode == 1 and "198.18.0.250" in result.stderr and "Traceback" not in result.stderr
