"""Signals mid-deploy: SIGTERM, SIGINT, SIGHUP unwind and exit 128+N; a second signal stops the
unwind, says what is left and how to finish, and `swarm rollback --resume` finishes it."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from tests.reliability.faults import (
    assert_consistent,
    fast_inventory,
    set_service,
    snapshot,
    start,
    swarm,
)

pytestmark = pytest.mark.lab


def haproxy_change(deployed, tmp_path: Path) -> Path:
    value = random.randint(200, 9000)
    return fast_inventory(deployed, tmp_path / "inv.yml",
                          lambda d: set_service(d, "oracle", "haproxy", rate_limit_per_10s=value))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_while_the_gate_waits_rolls_the_phase_back(deployed, tmp_path, state, sig, code) -> None:
    lab = deployed
    inventory = haproxy_change(lab, tmp_path)
    before = snapshot(lab)
    run = start(lab, inventory, "deploy", "--phase", "2", state=state)
    run.wait_for("gate", "start")
    run.signal(sig)
    run.finish()
    assert run.code == code, run.stderr
    assert "was interrupted and rolled back" in run.stderr
    assert "Traceback" not in run.stderr
    assert_consistent(lab, before, run, state=state)
    print(f"{sig.name}: consistent fleet {run.seconds():.1f}s after the start, exit {run.code}")  # noqa: T201


def test_a_second_signal_stops_the_unwind_and_resume_finishes_it(deployed, tmp_path, state) -> None:
    lab = deployed
    inventory = haproxy_change(lab, tmp_path)
    before = snapshot(lab)
    run = start(lab, inventory, "deploy", "--phase", "2", state=state)
    run.wait_for("gate", "start")
    run.signal(signal.SIGTERM)
    run.wait_for("rollback", "start")
    run.signal(signal.SIGTERM)
    run.finish()
    assert run.code == 3, run.stderr
    assert "stopped by a second signal" in run.stderr and "oracle:" in run.stderr
    assert "swarm rollback --resume" in run.stderr
    resumed = swarm(lab, inventory, "rollback", "--resume", state=state)
    assert resumed.code == 0, resumed.stderr
    assert_consistent(lab, before, run, state=state)
