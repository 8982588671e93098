"""The no-op fast path: a plan record left by a full run lets the next one cost one command per
node; whenever the record cannot vouch for the answer, the full path takes over (same look)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestrator.engine.fastpath import PlanCache, inputs_digest, secrets_digest, try_noop
from orchestrator.secrets import Secret
from orchestrator.transport.fleet import Fleet
from tests.unit.engine.replay_fleet import REPO, NodeCase, ReplayFleet


@pytest.fixture
def recorded(tmp_path: Path):
    """A full no-op run of phases 2-4 that left its plan record."""
    fleet = ReplayFleet()
    cache = PlanCache(tmp_path / "plans")
    fleet.deploy(phases="2-4", state_dir=tmp_path, plan_cache=cache, plan_key="k" * 64)
    record = cache.load("k" * 64)
    assert record is not None
    return fleet, record


def replay_again(fleet: ReplayFleet, **cases: NodeCase) -> Fleet:
    fleet.transports.clear()
    return Fleet([fleet.node(n, cases.get(n)) for n in ("oracle", "starlord", "thanos")])


def noop(fleet: ReplayFleet, record, transports: Fleet, secrets=None):
    values = secrets if secrets is not None else {n: fleet.secrets[n] for n in (record.vault.paths if record.vault else {})}
    return asyncio.run(try_noop(record, run_id="fast01", holder="{}", fleet=transports, reader=lambda _v: values))


def test_a_full_run_leaves_a_record_of_exactly_what_it_asked(recorded) -> None:
    fleet, record = recorded
    assert set(record.nodes) == {"oracle", "starlord", "thanos"}
    look = fleet.transports["oracle"].round_trips[0][0]
    for line in record.nodes["oracle"].expected:
        assert repr(line) in look or line in look
    assert "qdrant" not in record.nodes["starlord"].services      # protected: the full path decides
    assert record.secrets == secrets_digest({n: fleet.secrets[n] for n in record.vault.paths})
    assert all("lab-" not in str(v) for v in record.nodes["oracle"].target.values())  # no secret values


def test_the_next_run_costs_one_command_per_node(recorded) -> None:
    fleet, record = recorded
    transports = replay_again(fleet)
    outcome = noop(fleet, record, transports)
    assert outcome.noop, outcome.why
    for name in ("oracle", "starlord", "thanos"):
        trips = fleet.transports[name].round_trips
        assert len(trips) == 1 and trips[0][0].startswith("look-lock ")


def test_a_node_that_differs_hands_over_its_lock_and_connections(recorded) -> None:
    fleet, record = recorded
    transports = replay_again(fleet, thanos=NodeCase(changed=["sillytavern"]))
    outcome = noop(fleet, record, transports)
    assert not outcome.noop and "thanos" in outcome.why
    assert outcome.states["thanos"].lock.taken and outcome.fleet is transports


def test_a_stopped_container_is_not_a_noop(recorded) -> None:
    fleet, record = recorded
    outcome = noop(fleet, record, replay_again(fleet, starlord=NodeCase(stopped=["gpu-monitor"])))
    assert not outcome.noop and "gpu-monitor not running" in outcome.why


def test_a_rotated_secret_is_not_a_noop(recorded) -> None:
    fleet, record = recorded
    rotated = {n: fleet.secrets[n] for n in record.vault.paths}
    rotated["grafana_admin_password"] = Secret("rotated-value-1", "grafana_admin_password")
    outcome = noop(fleet, record, replay_again(fleet), secrets=rotated)
    assert not outcome.noop and "secrets" in outcome.why
    assert all(not t.round_trips for t in fleet.transports.values())  # not even a look


def test_the_full_path_goes_on_from_the_handover(recorded, tmp_path) -> None:
    """thanos differs: the full deploy reuses the fast path's connections, lock and secrets."""
    fleet, record = recorded
    transports = replay_again(fleet, thanos=NodeCase(changed=["sillytavern"]))
    outcome = noop(fleet, record, transports)
    result = fleet.deploy(phases="2-4", state_dir=tmp_path, handover=outcome, fleet_override=transports)
    assert result.changed == {4: ["thanos"]}
    trips = fleet.transports["thanos"].round_trips
    assert trips[0][0].startswith("look-lock ") and trips[1][0].startswith("look-lock ")
    assert any(t[-1].startswith("docker compose") and t[-1].endswith("-- sillytavern") for t in trips)
    assert all(len(fleet.transports[n].round_trips) == 2 for n in ("oracle", "starlord"))


def test_the_key_changes_with_every_input(tmp_path: Path) -> None:
    import shutil

    for part in ("inventory", "playbooks", "roles"):
        shutil.copytree(REPO / part, tmp_path / part)
    inv, book = tmp_path / "inventory/swarm.yml", tmp_path / "playbooks/ai-swarm.yml"
    base = inputs_digest(tmp_path, inv, book, ["deploy", "2-4"])
    assert inputs_digest(tmp_path, inv, book, ["deploy", "2-4"]) == base
    assert inputs_digest(tmp_path, inv, book, ["deploy", "3"]) != base
    template = tmp_path / "roles/haproxy/haproxy.cfg.j2"
    template.write_text(template.read_text() + "\n# edited\n")
    assert inputs_digest(tmp_path, inv, book, ["deploy", "2-4"]) != base


def test_the_key_changes_with_a_shared_role_an_example_project_uses(tmp_path: Path, monkeypatch) -> None:
    """A project without its own haproxy role uses swarm's: editing that one must not leave
    the no-op record standing."""
    import shutil

    from orchestrator.engine import fastpath

    swarm_copy = tmp_path / "swarm"
    (swarm_copy / "orchestrator").mkdir(parents=True)
    shutil.copytree(REPO / "roles", swarm_copy / "roles")
    monkeypatch.setattr(fastpath, "PACKAGE", swarm_copy / "orchestrator")
    project = tmp_path / "gateway"
    shutil.copytree(REPO / "examples" / "gateway", project)
    inv, book = project / "inventory/swarm.yml", project / "playbooks/gateway.yml"
    base = inputs_digest(project, inv, book, ["deploy"])
    shared = swarm_copy / "roles/haproxy/haproxy.cfg.j2"
    shared.write_text(shared.read_text() + "\n# edited\n")
    assert inputs_digest(project, inv, book, ["deploy"]) != base


def test_an_optional_node_that_is_off_is_skipped_not_a_reason_to_replan(recorded) -> None:
    """The overflow host is off (optional): the others unchanged is a no-op, as the full path
    would conclude, instead of planning everything anew on every run."""
    fleet, record = recorded
    record.nodes["thanos"].optional = True
    outcome = noop(fleet, record, replay_again(fleet, thanos=NodeCase(dead=True)))
    assert outcome.noop, outcome.why
    assert set(outcome.skipped) == {"thanos"} and set(outcome.states) == {"oracle", "starlord"}


def test_a_required_node_that_is_off_is_left_to_the_full_path(recorded) -> None:
    fleet, record = recorded
    outcome = noop(fleet, record, replay_again(fleet, thanos=NodeCase(dead=True)))
    assert not outcome.noop and "did not answer" in outcome.why
