"""Across nodes, from the controller: Consul health, HAProxy's vLLM pool, LiteLLM routing."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.conformance import fleet
from orchestrator.conformance.plugin import Conformance
from orchestrator.render.services import Service


def explain(problems: list[str]) -> str:
    return "; ".join(problems)


def test_consul_passing(swarm: Conformance, consul_service: Service) -> None:
    problems = fleet.consul_problems(consul_service.name, swarm.consul_statuses(), consul_service.phase)
    assert not problems, explain(problems)


def test_haproxy_vllm_pool_up(swarm: Conformance, haproxy_service: Service) -> None:
    """Every vLLM instance is UP in the front door's backend of the model it serves."""
    try:
        stats = fleet.fetch_stats(haproxy_service, swarm.host(haproxy_service.node))
        rows = fleet.parse_haproxy_csv(stats)
    except (httpx.HTTPError, ValueError, AssertionError) as exc:
        pytest.fail(f"HAProxy stats on {haproxy_service.node}: {exc}", pytrace=False)
    problems = fleet.pool_problems(rows, fleet.model_backends(swarm.scope.role_services("vllm")))
    assert not problems, explain(problems)


def _base(swarm: Conformance, litellm: Service) -> str:
    return fleet.litellm_base(litellm, swarm.scope.role_services("haproxy"))


def test_litellm_liveliness(swarm: Conformance, litellm_service: Service) -> None:
    problems = fleet.liveliness_problems(litellm_service, _base(swarm, litellm_service))
    assert not problems, explain(problems)


def test_litellm_routes_chat_to_vllm(swarm: Conformance, litellm_service: Service) -> None:
    ref = litellm_service.secret_env.get("LITELLM_MASTER_KEY")
    if ref is None:
        pytest.fail(f"{litellm_service.name} has no LITELLM_MASTER_KEY in its role's secret_env", pytrace=False)
    model, backends = fleet.chat_backends(swarm.scope.role_services("vllm"),
                                          swarm.scope.role_services("ollama"))
    try:
        response = fleet.chat(litellm_service, swarm.secrets()[ref], model, _base(swarm, litellm_service))
    except httpx.HTTPError as exc:
        pytest.fail(f"chat completion via {litellm_service.name}: {type(exc).__name__}: {exc}", pytrace=False)
    try:
        body = response.json()
    except ValueError:
        body = None
    problems = fleet.chat_problems(response.status_code, body, response.headers, backends)
    assert not problems, explain(problems)


def test_front_door_allowlist(swarm: Conformance, haproxy_service: Service) -> None:
    """The client allowlist (inventory `allowed_ips`) is in force: the controller is refused
    (403) on LiteLLM's paths exactly when its address is outside the list."""
    allowed = [str(a) for a in haproxy_service.vars.get("allowed_ips") or []]
    if not allowed:
        pytest.skip(f"{haproxy_service.name}: no allowed_ips, no allowlist to check")
    port = int(haproxy_service.vars["http_port"])
    try:
        client = fleet.source_address(haproxy_service.address, port)
        status = fleet.front_door_status(haproxy_service)
    except (OSError, httpx.HTTPError) as exc:
        pytest.fail(f"front door of {haproxy_service.node}: {type(exc).__name__}: {exc}", pytrace=False)
    problems = fleet.allowlist_problems(status, client, allowed)
    assert not problems, explain(problems)
