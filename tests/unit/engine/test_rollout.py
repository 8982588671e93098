"""How each changed service of a phase is put in place (engine/rollout.py's plan), as data:
what the node runs and what the release brings in, the way out."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.engine import rollout
from orchestrator.facts.node import NodeState
from orchestrator.render.services import Service
from tests.unit.engine.replay_fleet import ReplayFleet


@pytest.fixture(scope="module")
def fleet() -> ReplayFleet:
    return ReplayFleet()


def running(node: str, *services: str) -> tuple[dict[str, Any], ...]:
    return tuple({"State": "running", "Labels": f"com.docker.compose.project=swarm-{node},"
                                                f"com.docker.compose.service={s}"} for s in services)


def services(fleet: ReplayFleet, node: str) -> tuple[Service, ...]:
    return fleet.render.nodes[node].services


def test_a_running_model_server_rolls_when_a_front_door_exists(fleet: ReplayFleet) -> None:
    state = NodeState("starlord", current={"applied": {}}, containers=running("starlord", "vllm-primary"))
    doors = rollout.doors_of(fleet.render.all_services())
    plan = rollout.plan_node(["vllm-primary", "vllm-secondary", "gpu-monitor"],
                             {"vllm-primary": "changed", "vllm-secondary": "not running", "gpu-monitor": "changed"},
                             services(fleet, "starlord"), state, "swarm-starlord", shapes={}, configs={}, doors=doors)
    assert [s.name for s in plan.rolling] == ["vllm-primary"]           # drained, swapped, back
    assert plan.compose == ("vllm-secondary", "gpu-monitor")            # not running: nothing to drain
    assert plan.applied_by_step == ("vllm-secondary", "gpu-monitor")
    without = rollout.plan_node(["vllm-primary"], {"vllm-primary": "changed"}, services(fleet, "starlord"),
                                state, "swarm-starlord", shapes={}, configs={}, doors=[])
    assert without.compose == ("vllm-primary",) and not without.rolling  # no front door to drain in


def test_a_config_only_change_of_a_reloadable_service_reloads_it(fleet: ReplayFleet) -> None:
    shapes, configs = fleet.shapes("oracle"), {"haproxy": "bbbb", "prometheus": "cccc"}
    state = NodeState("oracle", current={"shapes": {"haproxy": shapes["haproxy"], "prometheus": "old-shape"},
                                         "configs": {"haproxy": "aaaa"}},
                      containers=running("oracle", "haproxy", "prometheus"))
    plan = rollout.plan_node(["haproxy", "prometheus"], {}, services(fleet, "oracle"), state, "swarm-oracle",
                             shapes=shapes, configs=configs, doors=[])
    assert [s.name for s in plan.reload] == ["haproxy"]                 # same shape: only its config
    assert plan.compose == ("prometheus",)                              # its definition changed too
    assert {(s.name, d) for s, d in plan.live} == {("haproxy", "bbbb"), ("prometheus", "cccc")}
    hooks = rollout.apply_hooks(fleet.project.inventory.node("oracle"), plan, state, "r2")
    assert [c.describe() for c in hooks.after_up] == ["signal-service swarm-oracle haproxy SIGUSR2"]
    assert [c.describe() for c in hooks.undo_before] == ["install-live-config /opt/ai-swarm haproxy aaaa"]
    assert hooks.up == ("prometheus",)


def test_a_release_records_shapes_and_configs_over_the_current_ones() -> None:
    state = NodeState("oracle", current={"shapes": {"haproxy": "s1", "prometheus": "p1"}, "configs": {"haproxy": "c1"}})
    extra = rollout.release_extra({"haproxy": "s2"}, {"haproxy": "c2"}, state)
    assert extra == {"shapes": {"haproxy": "s2", "prometheus": "p1"}, "configs": {"haproxy": "c2"}}
    taken = rollout.taken_extra({"shapes": {"haproxy": "s0"}, "configs": {"haproxy": "c0"}}, state, ["haproxy"])
    assert taken == {"shapes": {"haproxy": "s0", "prometheus": "p1"}, "configs": {"haproxy": "c0"}}


def test_groups_are_by_model_in_name_order(fleet: ReplayFleet) -> None:
    everyone = {s.name: s for s in fleet.render.all_services()}
    node = fleet.project.inventory.node("starlord")
    moves = [rollout.Move(svc=everyone[n], node=node, release="r", previous="p")
             for n in ("vllm-secondary", "vllm-backup", "vllm-primary")]
    groups = rollout.groups_of(moves)
    assert {b: [m.svc.name for m in ms] for b, ms in groups.items()} == {
        "model_TheBloke--Mistral-7B-Instruct-v0.2-GPTQ": ["vllm-backup", "vllm-secondary"],
        "model_casperhansen--mistral-nemo-instruct-2407-awq": ["vllm-primary"]}


def test_in_flight_and_completion_answers() -> None:
    metrics = ('# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name="m"} 3.0\n'
               'vllm:num_requests_waiting{model_name="m"} 1.0\n')
    assert rollout.running_requests(metrics) == 3
    assert rollout.completion_problem(200, '{"choices": [{"text": "x"}]}') is None
    assert "without choices" in str(rollout.completion_problem(200, '{"choices": []}'))
    assert "503" in str(rollout.completion_problem(503, "loading"))
