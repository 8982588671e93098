"""Per service of the node's phases: its container runs as the render says, and protected ones stay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from orchestrator.conformance import checks, protected
from orchestrator.conformance.plugin import Conformance
from orchestrator.render.services import Service


def explain(problems: list[str]) -> str:
    return "; ".join(problems)


def container(swarm: Conformance, svc: Service) -> Mapping[str, Any]:
    """The service's container from the node's one batched `docker inspect`; fails if absent."""
    facts = swarm.facts(svc.node, "containers")
    found = checks.find_container(facts.containers, swarm.node(svc.node).project, svc.name)
    if found is None:
        pytest.fail(explain(checks.missing(swarm.node(svc.node).project, svc.name)), pytrace=False)
    return found


def test_container_running(swarm: Conformance, service: Service) -> None:
    problems = checks.running_problems(container(swarm, service))
    assert not problems, explain(problems)


def test_container_healthy(swarm: Conformance, checked_service: Service) -> None:
    problems = checks.health_problems(container(swarm, checked_service))
    assert not problems, explain(problems)


def test_container_image(swarm: Conformance, service: Service) -> None:
    facts = swarm.facts(service.node, "images")
    problems = checks.image_problems(service.image, container(swarm, service),
                                     swarm.pins().get(service.image), facts.image_digests)
    assert not problems, explain(problems)


def test_container_user(swarm: Conformance, service: Service) -> None:
    root_reason = swarm.project.roles[service.role].spec.root_reason
    problems = checks.user_problems(service.compose.get("user"), root_reason, container(swarm, service))
    assert not problems, explain(problems)


def test_container_restart_policy(swarm: Conformance, service: Service) -> None:
    problems = checks.restart_problems(str(service.compose.get("restart", "no")), container(swarm, service))
    assert not problems, explain(problems)


def test_container_limits(swarm: Conformance, service: Service) -> None:
    problems = checks.limit_problems(service.compose, container(swarm, service))
    assert not problems, explain(problems)


def test_container_ports(swarm: Conformance, service: Service) -> None:
    problems = checks.port_problems(service.ports, container(swarm, service))
    assert not problems, explain(problems)


def test_gpu_visible(swarm: Conformance, gpu_service: Service) -> None:
    devices = str(gpu_service.compose.get("environment", {}).get("NVIDIA_VISIBLE_DEVICES", ""))
    problems = checks.gpu_container_problems(container(swarm, gpu_service), devices)
    assert not problems, explain(problems)


def test_protected_not_recreated(swarm: Conformance, protected_service: Service) -> None:
    svc = protected_service
    now = protected.seen_from(container(swarm, svc))
    before = protected.swap(protected.record_key(svc.node, svc.address, svc.name), now)
    problems = protected.recreate_problems(svc.name, before, now)
    assert not problems, explain(problems)
