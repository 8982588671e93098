"""What the deploy depends on, failing: the registry, Vault, Consul. Each gives a message that
says what to do and leaves every node on its new or its previous release."""

from __future__ import annotations

import json
import random
import time

import httpx
import pytest

from orchestrator.lab import registry
from tests.reliability.faults import (
    assert_consistent,
    consul_registrations,
    docker_on,
    fast_inventory,
    set_service,
    snapshot,
    start,
    swarm,
    wait_until,
)

pytestmark = pytest.mark.lab


def changed(lab, tmp_path, node="oracle", service="haproxy", **values):
    values = values or {"rate_limit_per_10s": random.randint(200, 9000)}
    return fast_inventory(lab, tmp_path / "inv.yml", lambda d: set_service(d, node, service, **values))


def vault(lab) -> tuple[str, str]:
    keys = json.loads((lab.paths.root / "vault-keys.json").read_text())
    return f"http://{lab.nodes['oracle']}:8200", keys["root_token"]


def test_the_registry_down_stops_the_deploy_before_any_change(deployed, tmp_path, state) -> None:
    lab = deployed
    before = snapshot(lab)
    registry.stop(lab.paths)
    try:
        run = swarm(lab, changed(lab, tmp_path, "thanos", "vllm-backup", image_tag="v0.6.3-broken"),
                    "deploy", "--phase", "4", state=state, timeout=120)
    finally:
        registry.start(lab.paths)
    assert run.code == 1, run.stderr
    assert "nothing was changed" in run.stderr and "image" in run.stderr
    assert_consistent(lab, before, run, state=state)


def test_a_sealed_vault_stops_the_deploy_before_any_change(deployed, tmp_path, state) -> None:
    lab = deployed
    before = snapshot(lab)
    addr, token = vault(lab)
    httpx.put(f"{addr}/v1/sys/seal", headers={"X-Vault-Token": token}, timeout=10).raise_for_status()
    try:
        run = swarm(lab, changed(lab, tmp_path), "deploy", "--phase", "2", state=state, timeout=120)
    finally:
        unsealed = swarm(lab, lab.inventory_path, "vault", "unseal", "--key-file",
                         str(lab.paths.root / "vault-keys.json"), state=state, json_output=False)
    assert unsealed.code == 0, unsealed.stderr
    assert run.code == 1, run.stderr
    assert "sealed" in run.stderr.lower() and "unseal" in run.stderr
    assert_consistent(lab, before, run, state=state)


def test_vault_sealed_mid_phase_does_not_stop_a_deploy_that_read_its_secrets(deployed, tmp_path, state) -> None:
    lab = deployed
    addr, token = vault(lab)
    run = start(lab, changed(lab, tmp_path), "deploy", "--phase", "2", state=state)
    run.wait_for("gate", "start")
    httpx.put(f"{addr}/v1/sys/seal", headers={"X-Vault-Token": token}, timeout=10).raise_for_status()
    try:
        run.finish()
    finally:
        swarm(lab, lab.inventory_path, "vault", "unseal", "--key-file", str(lab.paths.root / "vault-keys.json"),
              state=state, json_output=False)
    assert run.code == 0, run.stderr
    assert_consistent(lab, snapshot(lab), run, state=state)


def test_consul_down_mid_phase_rolls_the_phase_back(deployed, tmp_path, state) -> None:
    lab = deployed
    before = snapshot(lab)
    registered = {k: v["Meta"].get("swarm_release") for k, v in consul_registrations(lab).items()}
    def held(data: dict) -> None:  # type: ignore[type-arg]
        # a 10 s hold, not the suite's 2 s: Consul must be down before the gate passes and the
        # phase registers, and stopping it (ssh, docker stop) can take a second or two
        set_service(data, "oracle", "haproxy", rate_limit_per_10s=random.randint(200, 9000))
        data["nodes"]["oracle"]["vars"]["min_healthy_time"] = "10s"

    run = start(lab, fast_inventory(lab, tmp_path / "inv.yml", held), "deploy", "--phase", "2", state=state)
    run.wait_for("gate", "start")
    docker_on(lab, "oracle", "stop", "swarm-oracle-consul-1")
    try:
        run.finish()
    finally:
        docker_on(lab, "oracle", "start", "swarm-oracle-consul-1")
        wait_until(lambda: _answers(lab), 60, "Consul did not come back")
    assert run.code == 1, run.stderr
    assert "Consul" in run.stderr and "rolled back" in run.stderr
    assert_consistent(lab, before, run, state=state)
    again = swarm(lab, fast_inventory(lab, tmp_path / "back.yml"), "deploy", "--phase", "1-4", state=state)
    assert again.code == 0, again.stderr
    # every registration is back, as it was before the phase or re-put by the redeploy (which,
    # with the fault suite's inventory, may itself have made a new release)
    now = consul_registrations(lab)
    assert set(registered) <= set(now), sorted(set(registered) - set(now))
    node_of = {address: name for name, address in lab.nodes.items()}
    current = snapshot(lab)
    on_oracle = [k for k in registered if node_of.get(now[k]["Address"]) == "oracle"]  # phase 2's node
    assert on_oracle
    wrong = {k: now[k]["Meta"].get("swarm_release") for k in on_oracle
             if now[k]["Meta"].get("swarm_release") not in {registered[k], current["oracle"]}}
    assert not wrong, f"registrations naming neither their release before the phase nor oracle's current: {wrong}"


def _answers(lab) -> bool:
    try:
        return httpx.get(f"http://{lab.nodes['oracle']}:8500/v1/status/leader", timeout=2).is_success
    except httpx.HTTPError:
        time.sleep(0.2)
        return False
