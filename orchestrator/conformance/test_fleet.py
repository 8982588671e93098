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
    try:
        rows = fleet.parse_haproxy_csv(fleet.fetch_stats(haproxy_service))
    except (httpx.HTTPError, ValueError) as exc:
        pytest.fail(f"HAProxy stats on {haproxy_service.node}: {exc}", pytrace=False)
    problems = fleet.pool_problems(rows, [s.name for s in swarm.scope.role_services("vllm")])
    assert not problems, explain(problems)


def test_litellm_liveliness(swarm: Conformance, litellm_service: Service) -> None:
    problems = fleet.liveliness_problems(litellm_service)
    assert not problems, explain(problems)


def test_litellm_routes_chat_to_vllm(swarm: Conformance, litellm_service: Service) -> None:
    ref = litellm_service.secret_env.get("LITELLM_MASTER_KEY")
    if ref is None:
        pytest.fail(f"{litellm_service.name} has no LITELLM_MASTER_KEY in its role's secret_env", pytrace=False)
    try:
        response = fleet.chat(litellm_service, swarm.secrets()[ref], "primary")
    except httpx.HTTPError as exc:
        pytest.fail(f"chat completion via {litellm_service.name}: {type(exc).__name__}: {exc}", pytrace=False)
    try:
        body = response.json()
    except ValueError:
        body = None
    problems = fleet.chat_problems(response.status_code, body, response.headers,
                                   swarm.scope.role_services("vllm"))
    assert not problems, explain(problems)
