"""Per service of the node's phases: its container runs as the render says, protected ones
stay, and the servers behind PostgreSQL and Prometheus answer as themselves."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import yaml

from orchestrator import commands
from orchestrator.addresses import http_url
from orchestrator.conformance import checks, protected
from orchestrator.conformance.fleet import in_container_get
from orchestrator.conformance.plugin import Conformance, context, node_of, param_id
from orchestrator.render.pins import recorded_images
from orchestrator.render.services import LOOPBACK, Service

# Services of one role, parametrized here as plugin.PARAMETERS does for the others.
ROLE_PARAMETERS = {"postgres_service": "postgres", "prometheus_service": "prometheus"}
HTTP_TIMEOUT = 10.0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for argname, role in ROLE_PARAMETERS.items():
        if argname in metafunc.fixturenames:
            services = [s for s in context(metafunc.config).scope.services if s.role == role]
            metafunc.parametrize(argname, [
                pytest.param(s, id=param_id(s), marks=pytest.mark.xdist_group(node_of(s)))
                for s in services])


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
    facts = swarm.facts(service.node, "images", "release")
    # the digest the node's release pinned (what the deploy ran), else the preflight report's
    pin = recorded_images(facts.release).get(service.name) or swarm.pins().get(service.image)
    problems = checks.image_problems(service.image, container(swarm, service), pin, facts.image_digests)
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


def test_postgres_answers_a_query(swarm: Conformance, postgres_service: Service) -> None:
    svc = postgres_service
    name = checks.name_of(container(swarm, svc))
    user, database = str(svc.vars["db_user"]), str(svc.vars["db_name"])
    query = commands.read_only("docker", "exec", name, "psql", "-U", user, "-d", database,
                               "-tAc", checks.POSTGRES_QUERY)
    result = swarm.host(svc.node).run(query.shell)
    problems = checks.postgres_query_problems(name, result.rc, result.stdout or result.stderr,
                                              database, user)
    assert not problems, explain(problems)


def _get_json(url: str) -> Any:
    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _service_json(swarm: Conformance, svc: Service, path: str) -> Any:
    """GET a service's JSON from the controller, or — published on its node's loopback only —
    from inside its container on the node (conformance/fleet.in_container_get)."""
    port = svc.ports[0]
    if port.host_ip != LOOPBACK:
        return _get_json(http_url(svc.address, port.port, path))
    try:
        return json.loads(in_container_get(swarm.host(svc.node), svc, port.target, path))
    except (AssertionError, ValueError):
        return None


def test_prometheus_runs_the_rendered_config(swarm: Conformance, prometheus_service: Service) -> None:
    svc = prometheus_service
    base = "/api/v1"
    status = _service_json(swarm, svc, f"{base}/status/config") or {}
    loaded_text = (status.get("data") or {}).get("yaml")
    loaded = yaml.safe_load(loaded_text) if isinstance(loaded_text, str) else None
    rendered_file = swarm.scope.render.nodes[svc.node].files.get(f"config/{svc.name}/prometheus.yml")
    if rendered_file is None:
        pytest.fail(f"the render has no config/{svc.name}/prometheus.yml", pytrace=False)
    problems = checks.prometheus_problems(svc.name, _service_json(swarm, svc, f"{base}/status/buildinfo"),
                                          loaded if isinstance(loaded, dict) else None,
                                          yaml.safe_load(rendered_file) or {})
    assert not problems, explain(problems)
