"""Scope and test generation: which nodes and services a verify covers, and how tests are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config.project import load_project
from orchestrator.conformance import plugin
from orchestrator.errors import InputError

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def project():  # type: ignore[no-untyped-def]
    return load_project(REPO)


def test_whole_fleet_leaves_out_only_an_optional_node_that_is_off(project) -> None:  # type: ignore[no-untyped-def]
    """The run selection's one optional-node rule: overflow is in the scope, marked optional; when
    it does not answer within its window it is left out, and the summary names it."""
    scope = plugin.make_scope(project, None, None)
    assert [n.name for n in scope.nodes] == ["oracle", "starlord", "thanos", "overflow"]
    assert scope.optional == frozenset({"overflow"})
    off = plugin.make_scope(project, None, None, {"overflow": "no answer within 0.2s"})
    assert [n.name for n in off.nodes] == ["oracle", "starlord", "thanos"]
    assert {s.node for s in off.services} == {"oracle", "starlord", "thanos"}
    assert "qdrant" in {s.name for s in off.services if s.protected}
    nodes = {"overflow": {"passed": 0, "failed": 0, "skipped": 0, "failures": [], "off": "no answer within 0.2s"}}
    assert list(plugin.summary_lines(nodes)) == ["overflow: skipped — optional node off (no answer within 0.2s)"]


def test_phase_and_limit_narrow_the_scope(project) -> None:  # type: ignore[no-untyped-def]
    scope = plugin.make_scope(project, None, 3)
    assert [n.name for n in scope.nodes] == ["starlord"]
    assert {s.name for s in scope.services} == {"qdrant", "vllm-primary", "vllm-secondary", "gpu-monitor"}
    assert len(scope.playbook_services_on("starlord")) == 4
    scope = plugin.make_scope(project, "oracle", 1)
    assert {s.name for s in scope.services} == {"vault", "consul"}
    assert len(scope.playbook_services_on("oracle")) > 2  # listeners know every phase's ports
    assert plugin.make_scope(project, "overflow", None).nodes[0].name == "overflow"


def test_unknown_phase_or_node_is_bad_input(project) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError):
        plugin.make_scope(project, None, 42)
    with pytest.raises(InputError):
        plugin.make_scope(project, "nosuch", None)


def test_ids_name_node_and_service(project) -> None:  # type: ignore[no-untyped-def]
    scope = plugin.make_scope(project, None, None)
    assert plugin.param_id(scope.nodes[1]) == "starlord"
    svc = next(s for s in scope.services if s.name == "vllm-primary")
    assert plugin.param_id(svc) == "starlord:vllm-primary" and plugin.node_of(svc) == "starlord"
    assert [plugin.param_id(v) for v in plugin.PARAMETERS["gpu_node"](scope)] == ["starlord", "thanos"]
    assert [plugin.param_id(v) for v in plugin.PARAMETERS["haproxy_service"](scope)] == ["oracle:haproxy"]


def test_summary_per_node() -> None:
    results = {
        "test_node.py::test_env_files_private[starlord]": {"node": "starlord", "outcome": "failed",
                                                                    "message": "current/env/a.env has mode 0644"},
        "test_node.py::test_current_release[starlord]": {"node": "starlord", "outcome": "passed", "message": ""},
        "test_node.py::test_current_release[oracle]": {"node": "oracle", "outcome": "passed", "message": ""},
    }
    lines = list(plugin.summary_lines(plugin.summarize(results)))
    assert lines == ["oracle: conforms — 1 passed, 0 failed",
                     "starlord: DRIFT — 1 passed, 1 failed",
                     "  FAILED test_env_files_private[starlord]: current/env/a.env has mode 0644"]
