"""Locks, races and on-demand rollback: lock first, then look; a lock whose holder died is named
stale with the command that breaks it; a rollback stays inside its phase and never touches the
protected Qdrant; an optional node that is off is reported, never fatal."""

from __future__ import annotations

import json
import random
import subprocess

import pytest

from tests.reliability.faults import (
    ROOT,
    assert_consistent,
    docker_on,
    fast_inventory,
    release_of,
    set_service,
    sh,
    snapshot,
    swarm,
)

pytestmark = pytest.mark.lab


def test_a_lock_left_by_a_dead_process_is_reported_stale(deployed, tmp_path, state) -> None:
    lab = deployed
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    holder = json.dumps({"by": "root@ctl", "host": host, "pid": dead.pid, "phases": [4], "action": "deploy",
                         "since": "2026-12-01T00:00:00Z", "run": "deadbeef0000"})
    sh(lab, "thanos", f"mkdir {ROOT}/.lock && printf '%s' '{holder}' > {ROOT}/.lock/holder.json")
    inventory = fast_inventory(lab, tmp_path / "inv.yml",
                               lambda d: set_service(d, "thanos", "sillytavern", extra_env={"X": str(random.random())}))
    try:
        run = swarm(lab, inventory, "deploy", "--phase", "4", state=state)
        assert run.code == 4, run.stderr
        assert "whose process is gone: the lock is stale" in run.stderr
        assert "swarm unlock --limit thanos" in run.stderr
    finally:
        unlocked = swarm(lab, inventory, "unlock", "--limit", "thanos", state=state, json_output=False)
    assert unlocked.code == 0 and "thanos: broke the lock held by root@ctl" in unlocked.stdout, unlocked.stderr
    assert_consistent(lab, snapshot(lab), state=state)


def test_release_ids_strictly_increase_under_the_lock(deployed, tmp_path, state) -> None:
    """Two deploys of the same node back to back (same second): ids sort in deploy order, and
    each new release records the one before it as previous — read under the lock."""
    lab = deployed
    ids = []
    for value in (random.randint(200, 4000), random.randint(4001, 9000)):
        inventory = fast_inventory(lab, tmp_path / f"inv-{value}.yml",
                                   lambda d, v=value: set_service(d, "oracle", "haproxy", rate_limit_per_10s=v))
        before = snapshot(lab)["oracle"]
        run = swarm(lab, inventory, "deploy", "--phase", "2", state=state)
        assert run.code == 0, run.stderr
        now = snapshot(lab)["oracle"]
        assert now > before and release_of(lab, "oracle", now)["previous"] == before
        ids.append(now)
    assert ids == sorted(ids) and len(set(ids)) == 2


def only_one_phase3_release(lab) -> None:
    """Stage a starlord whose phase 3 was deployed once: its other phase-3 releases removed."""
    script = (f'cur=$(readlink {ROOT}/current); for d in {ROOT}/releases/*/; do r=$(basename "$d"); '
              f'[ "releases/$r" = "$cur" ] && continue; grep -q \'"phase": 3\' "$d/release.json" && rm -rf "$d"; done; true')
    sh(lab, "starlord", script)


def test_rollback_of_a_phase_right_after_its_first_deploy_is_refused(deployed, tmp_path, state) -> None:
    """Starlord's phase 3 has one release of its own: rolling it back is refused (exit 2) —
    its phase-1 release is another phase's; nothing is removed, the protected Qdrant least of all."""
    lab = deployed
    only_one_phase3_release(lab)
    qdrant = docker_on(lab, "starlord", "inspect", "-f", "{{.Id}}", "swarm-starlord-qdrant-1").strip()
    before = snapshot(lab)
    run = swarm(lab, fast_inventory(lab, tmp_path / "inv.yml"), "rollback", "--phase", "3", state=state)
    assert run.code == 2, run.stderr
    assert "phase 3 has no release before" in run.stderr
    assert docker_on(lab, "starlord", "inspect", "-f", "{{.Id}}", "swarm-starlord-qdrant-1").strip() == qdrant
    assert_consistent(lab, before, run, state=state)


def test_rollback_never_recreates_qdrant_and_stays_in_its_phase(deployed, tmp_path, state) -> None:
    lab = deployed
    qdrant = docker_on(lab, "starlord", "inspect", "-f", "{{.Id}}", "swarm-starlord-qdrant-1").strip()
    first = snapshot(lab)["starlord"]
    inventory = fast_inventory(lab, tmp_path / "inv.yml",
                               lambda d: set_service(d, "starlord", "gpu-monitor", extra_env={"X": str(random.random())}))
    assert swarm(lab, inventory, "deploy", "--phase", "3", state=state).code == 0
    second = snapshot(lab)["starlord"]
    run = swarm(lab, inventory, "rollback", "--phase", "3", state=state)
    assert run.code == 0, run.stderr
    now = snapshot(lab)["starlord"]
    record = release_of(lab, "starlord", now)
    assert record["rolled_back_to"] == first and record["previous"] == second
    assert docker_on(lab, "starlord", "inspect", "-f", "{{.Id}}", "swarm-starlord-qdrant-1").strip() == qdrant
    env = docker_on(lab, "starlord", "inspect", "-f", "{{json .Config.Env}}", "swarm-starlord-gpu-monitor-1")
    assert '"X=' not in env
    assert_consistent(lab, {"starlord": now}, run, state=state)


def test_rollback_with_a_lock_held_elsewhere_changes_nothing_and_leaves_no_lock_of_its_own(
        deployed, tmp_path, state) -> None:
    lab = deployed
    before = snapshot(lab)
    holder = json.dumps({"by": "alice@other", "host": "elsewhere", "pid": 1, "phases": [1], "action": "deploy"})
    sh(lab, "thanos", f"mkdir {ROOT}/.lock && printf '%s' '{holder}' > {ROOT}/.lock/holder.json")
    try:
        run = swarm(lab, fast_inventory(lab, tmp_path / "inv.yml"), "rollback", "--phase", "1", state=state)
    finally:
        sh(lab, "thanos", f"rm -rf {ROOT}/.lock")
    assert run.code == 4 and "alice@other" in run.stderr, run.stderr
    assert_consistent(lab, before, run, state=state)


def test_releases_reports_an_optional_node_that_is_off(deployed, tmp_path, state) -> None:
    """overflow is optional and not running in this lab: `swarm releases` lists the others."""
    lab = deployed
    run = swarm(lab, fast_inventory(lab, tmp_path / "inv.yml"), "releases", state=state, timeout=60,
                json_output=False)
    assert run.code == 0, run.stderr
    assert "overflow: (optional, unreachable" in run.stdout
    for node in ("oracle", "starlord", "thanos"):
        assert f"{node}:\n" in run.stdout
    assert run.stdout.count("  * ") == 3  # each running node marks its current release
