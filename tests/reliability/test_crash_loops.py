"""Healthy means it stayed up: a crash-looping service fails its phase at once and is rolled back
in seconds whatever the deadline says; a model that is still loading keeps its deadline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.reliability.faults import (
    assert_consistent,
    fast_inventory,
    set_service,
    snapshot,
    swarm,
)

pytestmark = pytest.mark.lab


def faulty(deployed, tmp_path: Path, node: str, service: str, mode: str, **more) -> Path:
    def change(data: dict) -> None:
        set_service(data, node, service, extra_env={"SWARM_STANDIN_MODE": mode},
                    healthy_deadline="300s", **more)

    return fast_inventory(deployed, tmp_path / "inv.yml", change)


def gate_seconds(run) -> float:
    """From the end of `compose up` (apply changed) to the run's end: what the fault cost."""
    applied = next(e["ts"] for e in run.events if e["kind"] == "apply" and e["state"] == "changed")
    return max(e["ts"] for e in run.events) - applied


def test_a_service_that_dies_after_each_start_is_not_declared_healthy(deployed, tmp_path, state) -> None:
    """Grafana exits a second after every start: its HTTP probe may well answer between
    restarts, but the gate sees its restart count move and fails the phase at once."""
    lab = deployed
    before = snapshot(lab)
    run = swarm(lab, faulty(lab, tmp_path, "oracle", "grafana", "die-after:1"), "deploy", "--phase", "2",
                state=state, timeout=150)
    assert run.code == 1, run.stderr
    assert "grafana on oracle" in run.stderr and "without waiting for the deadline" in run.stderr
    assert "restart" in run.stderr
    assert_consistent(lab, before, run, state=state)
    print(f"grafana crash loop: rolled back {gate_seconds(run):.1f}s after compose up")  # noqa: T201


def test_haproxy_crash_looping_is_rolled_back_in_seconds(deployed, tmp_path, state) -> None:
    """The fleet's front door exits at once after `compose up` (real HAProxy under the lab's
    fault wrapper): rolled back long before its 300 s deadline, the old HAProxy serving again."""
    lab = deployed
    before = snapshot(lab)
    run = swarm(lab, faulty(lab, tmp_path, "oracle", "haproxy", "die-after:0",
                            rate_limit_per_10s=random.randint(200, 9000)),
                "deploy", "--phase", "2", state=state, timeout=150)
    assert run.code == 1, run.stderr
    assert "haproxy on oracle" in run.stderr and "without waiting for the deadline" in run.stderr
    assert_consistent(lab, before, run, state=state)
    rolled = [e for e in run.events if e["kind"] == "rollback" and e["state"] in ("start", "rolled-back")]
    verdict_to_back = rolled[-1]["ts"] - rolled[0]["ts"]
    print(f"haproxy crash loop: rolled back {gate_seconds(run):.1f}s after compose up; "  # noqa: T201
          f"rollback after the verdict {verdict_to_back:.1f}s")


def test_a_model_still_loading_is_waited_for(deployed, tmp_path, state) -> None:
    """vLLM reading its weights (the stand-in does not listen for 8 s): running, not restarting —
    the gate keeps waiting within its deadline, shows progress, and the phase lands."""
    lab = deployed
    run = swarm(lab, faulty(lab, tmp_path, "thanos", "vllm-backup", "slow-start:8", max_num_seqs=7),
                "deploy", "--phase", "4", state=state, timeout=200)
    assert run.code == 0, run.stderr
    waited = [e for e in run.events if e["kind"] == "gate" and e["state"] == "progress"
              and e["data"].get("service") == "vllm-backup"]
    assert len(waited) >= 2 and all("deadline_left" in e["data"] for e in waited)
    assert json.dumps(run.events).count('"rolled-back"') == 0
    back = swarm(lab, fast_inventory(lab, tmp_path / "back.yml"), "deploy", "--phase", "4", state=state)
    assert back.code == 0, back.stderr
