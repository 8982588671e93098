"""The node itself failing the deploy: a full disk under deploy_root, and a rollback that cannot
bring the previous release back (its image is gone) — exit 3, naming the node and the next step."""

from __future__ import annotations

import random

import pytest

from orchestrator.lab import registry
from tests.reliability.faults import (
    ROOT,
    assert_consistent,
    docker_on,
    fast_inventory,
    set_service,
    sh,
    small_disk,
    snapshot,
    start,
    swarm,
)

pytestmark = pytest.mark.lab


def test_a_full_disk_fails_the_upload_cleanly(deployed, tmp_path, state) -> None:
    """Preflight refuses a full deploy_root before any change; past preflight
    (--skip-preflight), the upload fails on ENOSPC and leaves no half-written release."""
    lab = deployed
    before = snapshot(lab)
    inventory = fast_inventory(lab, tmp_path / "inv.yml",
                               lambda d: set_service(d, "starlord", "gpu-monitor", extra_env={"X": "y" * 4000}))
    with small_disk(lab, "starlord"):
        refused = swarm(lab, inventory, "deploy", "--phase", "3", state=state, timeout=120)
        run = swarm(lab, inventory, "deploy", "--phase", "3", "--skip-preflight", state=state, timeout=120)
        left = sh(lab, "starlord", f"ls -a {ROOT}/releases")
    assert refused.code == 1 and "nothing was changed" in refused.stderr, refused.stderr
    assert "starlord: disk deploy_root" in refused.stderr and "free space" in refused.stderr
    assert run.code == 1, run.stderr
    assert "No space left on device" in run.stderr and "free space" in run.stderr
    assert ".tmp-" not in left
    assert_consistent(lab, before, run, state=state)


def test_a_rollback_that_cannot_bring_the_previous_image_back(deployed, tmp_path, state) -> None:
    """The new sillytavern crashes; meanwhile its image was removed from thanos and the registry
    is down: the rollback fails, exit 3 names thanos and what to do; once the registry is back,
    `swarm rollback --resume` finishes it."""
    lab = deployed
    before = snapshot(lab)
    image = docker_on(lab, "thanos", "inspect", "-f", "{{.Config.Image}}", "swarm-thanos-sillytavern-1").strip()
    inventory = fast_inventory(lab, tmp_path / "inv.yml", lambda d: set_service(
        d, "thanos", "sillytavern", extra_env={"SWARM_STANDIN_MODE": "die-after:10", "X": str(random.random())}))
    # dies 10 s after it listens, before its first health check (15 s): the gate can only fail it; the
    # registry stop and the rmi below are done long before the unwind would pull the old image back
    run = start(lab, inventory, "deploy", "--phase", "4", state=state)
    run.wait_for("gate", "start")
    registry.stop(lab.paths)
    try:
        docker_on(lab, "thanos", "rmi", "-f", image)
        run.finish(timeout=180)
        assert run.code == 3, run.stderr
        assert "thanos" in run.stderr and "rollback failed" in run.stderr
        assert "swarm rollback --resume" in run.stderr
    finally:
        registry.start(lab.paths)
    resumed = swarm(lab, inventory, "rollback", "--resume", state=state, timeout=180)
    assert resumed.code == 0, resumed.stderr
    assert_consistent(lab, before, run, state=state)
