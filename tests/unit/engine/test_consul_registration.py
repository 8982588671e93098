"""What swarm registers in Consul for the reference fleet: a check Consul's agent can run."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config.project import load_project
from orchestrator.engine.consul import agent_node, registration
from orchestrator.render.services import build_services

REPO = Path(__file__).resolve().parents[3]


def test_a_loopback_only_port_is_checked_only_where_the_agent_can_reach_it() -> None:
    """Consul's agent runs on oracle (consul.addr): oracle's Redis, published on oracle's
    loopback only, is checked by name on oracle's compose network; overflow's redis-cache,
    on overflow's loopback, gets no Consul check (it would always be critical) and says so."""
    project = load_project(REPO)
    agent = agent_node(project)
    assert agent == "oracle"
    services = {s.name: s for s in build_services(project)}
    here = registration(services["redis"], "r1", "ai-swarm", agent)
    assert here.check is not None and here.check.target == "redis:6379", here.check
    away = registration(services["redis-cache"], "r1", "ai-swarm", agent)
    assert away.check is None and away.meta["swarm_check"] == "node-only"
    router = registration(services["backup-router"], "r1", "ai-swarm", agent)  # reach: fleet
    assert router.check is not None and services["backup-router"].address in router.check.target
