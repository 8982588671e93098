"""What each phase will do on each node, decided from what the node said under its lock.

Pure: a phase's rendered services + the node's `NodeState` (+ secrets for the env files)
in, a `NodeChange` out. A service is applied when it is new, its definition changed
(compose definition, config files, env file: `service_hash`) or its container is not
running; a protected service (Qdrant) that is running is adopted and never touched, and a
change to its definition stops the run before any node is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.config.inventory import Node
from orchestrator.config.playbook import Phase
from orchestrator.errors import InputError
from orchestrator.facts.containers import published_ports
from orchestrator.facts.node import NodeState
from orchestrator.render.fleet import NodeRender
from orchestrator.render.release import ReleaseContent, build_release
from orchestrator.render.services import Service
from orchestrator.secrets import Secret


@dataclass(frozen=True)
class Infra:
    """What an infrastructure phase makes on a node: deploy dirs and the fleet network."""

    directories: tuple[str, ...]
    network: tuple[str, str] | None  # (name, subnet)


@dataclass(frozen=True)
class NodeChange:
    """One phase on one node: the release it would get and what compose would do."""

    phase: Phase
    node: Node
    services: tuple[Service, ...]
    content: ReleaseContent
    to_apply: tuple[str, ...] = ()
    adopted: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)
    infra: Infra | None = None
    infra_missing: bool = False
    recorded: frozenset[str] = frozenset()  # services the node's current release records

    @property
    def changed(self) -> bool:
        return bool(self.to_apply) or self.infra_missing or bool(self.adoptions)

    @property
    def adoptions(self) -> tuple[str, ...]:
        """Adopted services the node's release does not record yet (first deploy over them)."""
        return tuple(s for s in self.adopted if s not in self.recorded)

    def summary(self) -> str:
        parts = [f"{name} ({self.reasons.get(name, 'changed')})" for name in self.to_apply]
        if self.infra_missing:
            parts.append("infrastructure")
        parts += [f"{name} (adopted, protected)" for name in self.adoptions]
        return ", ".join(parts) or "nothing"


def infra_of(phase: Phase, network: tuple[str, str]) -> Infra | None:
    if phase.kind != "infrastructure":
        return None
    spec = phase.spec.infrastructure
    return Infra(directories=tuple(spec.directories), network=network if spec.network else None)


def content_for(render: NodeRender, phase: int, secrets: Mapping[str, Secret]) -> ReleaseContent:
    """The release a phase deploy would write on the node (env files for its own services)."""
    names = {s.name for s in render.services if s.phase == phase}
    return build_release(render, dict(secrets), only=names)


def expected_lines(contents: Iterable[ReleaseContent]) -> tuple[str, ...]:
    """`service hash` lines a node must already run for the run to be a no-op there."""
    return tuple(sorted({f"{name} {digest}" for c in contents for name, digest in c.service_hashes.items()}))


def plan_change(phase: Phase, node: Node, services: tuple[Service, ...], content: ReleaseContent,
                state: NodeState, network: tuple[str, str]) -> NodeChange:
    """What `phase` does on `node` (its rendered `services`, the release `content` they make),
    from the state read under the node's lock."""
    applied = state.applied
    to_apply: list[str] = []
    adopted: list[str] = []
    reasons: dict[str, str] = {}
    for svc in services:
        want = content.service_hashes[svc.name]
        if svc.protected and _protected_running(state, svc, node.project):
            _refuse_protected_change(node, svc, applied.get(svc.name), want)
            adopted.append(svc.name)
        elif applied.get(svc.name) != want:
            to_apply.append(svc.name)
            reasons[svc.name] = "new" if svc.name not in applied else "changed"
        elif not state.is_running(svc.name, node.project):
            to_apply.append(svc.name)
            reasons[svc.name] = "not running"
    infra = infra_of(phase, network)
    return NodeChange(phase=phase, node=node, services=services, content=content,
                      to_apply=tuple(to_apply), adopted=tuple(adopted), reasons=reasons,
                      infra=infra, infra_missing=infra is not None and not state.infra_ready,
                      recorded=frozenset(applied))


def _protected_running(state: NodeState, svc: Service, project: str) -> bool:
    if state.container_of(svc.name, project) is not None or state.container_of(svc.name) is not None:
        return True
    wanted = {p.port for p in svc.ports}
    return any(wanted & published_ports(c) for c in state.containers)


def _refuse_protected_change(node: Node, svc: Service, old: str | None, new: str) -> None:
    if old is not None and old != new:
        raise InputError(
            f"{svc.name} on {node.name} is protected and its definition changed ({old} -> {new}): "
            "swarm never recreates it, so the run stops before touching any node",
            hint="revert the change to its role/vars, or recreate it by hand and remove it from "
                 f"nodes.{node.name}.protected for one deploy")


def applied_after(change: NodeChange, state: NodeState) -> dict[str, str]:
    """The applied map of the new release: this phase's services as wanted, the rest as before."""
    applied = dict(state.applied)
    applied.update({s.name: change.content.service_hashes[s.name] for s in change.services})
    return applied


def changed_nodes(changes: Sequence[NodeChange]) -> list[str]:
    return [c.node.name for c in changes if c.changed]
