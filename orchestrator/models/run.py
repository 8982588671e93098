"""The two calls the engine makes before a phase touches a node, and what a release records.

`before_deploy`: the weights of every service of the phases about to change are staged on their
nodes (copied from a peer, the mirror or the hub when missing) and the revisions of the services
about to (re)start are hashed; a missing or corrupt file stops the run naming it, before any
container changes. The services come with their moving revisions already resolved to commits
(models/resolve.py: `with_commits`); one left moving has no commit to stage and stops the run.
It returns, per service, the manifest the new release records.

`before_rollback`: the revisions the target release's compose files mount are there and check
out on their nodes (staged again from a peer or the mirror when gone), so a rollback never
starts a server on missing weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.config.project import Project
from orchestrator.events import EventBus
from orchestrator.models.gc import parse_references
from orchestrator.models.stage import Needs, Outcome, Stager, needs_of, require_staged
from orchestrator.render.services import Service
from orchestrator.secrets import Secret
from orchestrator.transport.fleet import Fleet


async def before_deploy(project: Project, fleet: Fleet, bus: EventBus, services: Sequence[Service],
                        starting: Iterable[str], secrets: Mapping[str, Secret]) -> dict[str, dict[str, Any]]:
    """Stage and check the phases' weights; {service: manifest} for the release records."""
    needs = needs_of(services, check=starting)
    if not needs and not needs.unpinned:
        return {}
    outcome = await _stage(project, fleet, bus, needs, secrets)
    return release_models(services, outcome)


async def before_rollback(project: Project, fleet: Fleet, bus: EventBus, compose_texts: Mapping[str, str],
                          secrets: Mapping[str, Secret] | None = None) -> None:
    """The target releases' weights are on their nodes and check out (node -> its target compose.yml)."""
    needs = Needs()
    for name, text in compose_texts.items():
        root = project.inventory.node(name).deploy_root
        for pin, _ in parse_references(root, "\n".join(f"target {line}" for line in text.splitlines())).items():
            needs.by_node.setdefault(name, {}).setdefault(pin, []).append("the rollback target")
            needs.verify.add((name, pin))
    if needs:
        await _stage(project, fleet, bus, needs, secrets or {})


async def _stage(project: Project, fleet: Fleet, bus: EventBus, needs: Needs,
                 secrets: Mapping[str, Secret]) -> Outcome:
    token = secrets.get(project.inventory.spec.models.token_secret)
    outcome = await Stager(project, fleet, bus, token=token, repair=False).run(needs)
    require_staged(outcome, "preflight")
    return outcome


def release_models(services: Sequence[Service], outcome: Outcome) -> dict[str, dict[str, Any]]:
    """Exactly which revision (and files) each service of the release serves."""
    out = {}
    for svc in services:
        snap = outcome.snapshots.get(svc.weights) if svc.weights else None
        if snap is not None:
            out[svc.name] = snap.to_json()
    return out
