"""The litellm-tailnet-ollama example's checks as data: the proxy must reach each Ollama host
on 11434 (preflight), other open ports there are warnings, and the allowlist verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config.project import load_project
from orchestrator.conformance import fleet
from orchestrator.preflight import checks
from orchestrator.preflight.facts import NodeFacts
from orchestrator.preflight.scope import dependencies
from orchestrator.render.fleet import render_fleet
from orchestrator.render.services import build_services

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "litellm-tailnet-ollama"


@pytest.fixture(scope="module")
def project():  # type: ignore[no-untyped-def]
    return load_project(EXAMPLE)


def test_the_proxy_depends_on_every_ollama_host_on_11434(project) -> None:  # type: ignore[no-untyped-def]
    services = build_services(project)
    litellm = [s for s in services if s.name == "litellm"]
    deps = dependencies(render_fleet(project, services=services), litellm, services)
    assert sorted((d.target.node, d.port) for d in deps if d.target.role == "ollama") == [
        ("hab", 11434), ("hugo", 11434)]


def test_another_open_port_on_an_ollama_host_is_a_warning(project) -> None:  # type: ignore[no-untyped-def]
    hab = project.inventory.node("hab")
    mine = [s for s in build_services(project) if s.node == "hab"]
    quiet = checks.check_ollama_exposure(hab, mine, NodeFacts(listening=frozenset({22, 11434})))
    assert [r.status for r in quiet] == ["pass"]
    noisy = checks.check_ollama_exposure(hab, mine, NodeFacts(listening=frozenset({22, 11434, 8080, 5432})))
    assert [r.status for r in noisy] == ["warn"]
    assert "5432, 8080" in noisy[0].message and "tailnet" in (noisy[0].hint or "")
    proxy = project.inventory.node("proxy")
    others = [s for s in build_services(project) if s.node == "proxy"]
    assert checks.check_ollama_exposure(proxy, others, NodeFacts(listening=frozenset({80, 4000}))) == []


@pytest.mark.parametrize(("status", "client", "problems"), [
    (200, "100.101.0.7", 0), (401, "100.101.0.7", 0), (403, "100.101.0.7", 1),
    (403, "100.102.0.1", 0), (200, "100.102.0.1", 1), (401, "100.102.0.1", 1)])
def test_allowlist_verdict(status: int, client: str, problems: int) -> None:
    assert len(fleet.allowlist_problems(status, client, ["100.101.0.0/24", "127.0.0.1"])) == problems


def test_routing_check_asks_an_ollama_model_when_there_is_no_vllm(project) -> None:  # type: ignore[no-untyped-def]
    services = build_services(project)
    ollamas = [s for s in services if s.role == "ollama"]
    model, backends = fleet.chat_backends([], ollamas)
    assert model == "llama3" and {b.node for b in backends} == {"hab", "hugo"}
