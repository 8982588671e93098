"""What one run covers, computed once: phases, nodes, rendered services, secrets needed.

`select(project, phases, limit)` is shared by deploy, rollback, status, releases, preflight
and verify, so every command picks nodes by the same rules:

* `--phase 3`, `--phase 2-4`, `--phase 2,4` (none: every phase of the playbook, in order);
  validation phases (kind `preflight`) are what every deploy runs first, not a deploy of
  their own;
* `--limit` names nodes or groups; a phase none of whose nodes is chosen drops out;
* optional nodes (`optional: true`, e.g. a cloud box that may be off) are in the selection
  but may be skipped when unreachable — reported, never fatal for the others.

The playbook's services are built once and the chosen nodes rendered once (node layout,
content-addressed config store); everything downstream reads them from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from orchestrator.config.inventory import Node
from orchestrator.config.playbook import Phase
from orchestrator.config.project import Project
from orchestrator.errors import InputError
from orchestrator.render.fleet import FleetRender, render_fleet
from orchestrator.render.services import Service, build_services

_PHASES_RE = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")


def parse_phases(text: str | None, project: Project) -> tuple[int, ...] | None:
    """`3`, `2-4`, `2,4`, `1-2,4` -> phase ids in playbook order; None means every phase."""
    if text is None or text.strip() in ("", "all"):
        return None
    if not _PHASES_RE.match(text):
        raise InputError(f"--phase {text!r}: expected a phase number, a range like 2-4, or a list like 2,4")
    known = [p.id for p in project.playbook.phases]
    wanted: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        lo, hi = int(first), int(last or first)
        if hi < lo:
            raise InputError(f"--phase {text!r}: range {lo}-{hi} runs backwards")
        ids = [p for p in known if lo <= p <= hi]
        if not ids:
            raise InputError(f"no phase {part.strip()} in {project.playbook.path} "
                             f"(phases: {', '.join(map(str, known))})")
        wanted.update(ids)
    return tuple(p for p in known if p in wanted)


@dataclass(frozen=True)
class PhaseScope:
    """One phase of the run and the nodes it touches."""

    phase: Phase
    nodes: tuple[Node, ...]

    @property
    def id(self) -> int:
        return self.phase.id

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)


@dataclass(frozen=True)
class Selection:
    project: Project
    phases: tuple[PhaseScope, ...]
    services: tuple[Service, ...]            # every service of the playbook (built once)
    fleet: FleetRender                       # the chosen nodes, node layout (rendered once)
    skipped: dict[str, str] = field(default_factory=dict)  # optional node -> why it was left out

    @property
    def nodes(self) -> tuple[Node, ...]:
        seen: dict[str, Node] = {}
        for scope in self.phases:
            for node in scope.nodes:
                seen.setdefault(node.name, node)
        return tuple(seen.values())

    @property
    def phase_ids(self) -> tuple[int, ...]:
        return tuple(s.id for s in self.phases)

    def is_optional(self, node: str) -> bool:
        return self.project.inventory.node(node).spec.optional or any(
            s.phase.spec.optional and node in s.names for s in self.phases)

    def services_of(self, phase: int, node: str) -> tuple[Service, ...]:
        """The phase's services on the node, as rendered for it (config store paths)."""
        render = self.fleet.nodes.get(node)
        return tuple(s for s in render.services if s.phase == phase) if render else ()

    def phase_services(self, phase: int) -> tuple[Service, ...]:
        scope = next(s for s in self.phases if s.id == phase)
        return tuple(s for n in scope.names for s in self.services_of(phase, n))

    def selected_services(self) -> tuple[Service, ...]:
        return tuple(s for scope in self.phases for s in self.phase_services(scope.id))

    def phases_of(self, node: str) -> tuple[PhaseScope, ...]:
        return tuple(s for s in self.phases if node in s.names)

    def without(self, nodes: dict[str, str]) -> Selection:
        """The same run minus some (optional, unreachable) nodes; phases left empty drop out."""
        if not nodes:
            return self
        phases = tuple(replace(s, nodes=tuple(n for n in s.nodes if n.name not in nodes))
                       for s in self.phases)
        return replace(self, phases=tuple(p for p in phases if p.nodes),
                       skipped={**self.skipped, **nodes})


def select(project: Project, phases: Sequence[int] | None, limit: str | None, *,
           include_validation: bool = False, render: bool = True) -> Selection:
    """The run's phases and nodes; every service built once, the chosen nodes rendered once."""
    chosen = {n.name for n in project.inventory.select(limit)} if limit else None
    scopes = [_scope(p, project, chosen) for p in _phases(project, phases, include_validation)]
    kept = tuple(s for s in scopes if s.nodes)
    if not kept:
        raise InputError(_nothing_selected(project, phases, limit))
    services = build_services(project)
    names = list(dict.fromkeys(n.name for s in kept for n in s.nodes))
    fleet = (render_fleet(project, names, for_node=True, services=services) if render
             else FleetRender(nodes={}))
    return Selection(project=project, phases=kept, services=tuple(services), fleet=fleet)


def _phases(project: Project, ids: Sequence[int] | None, include_validation: bool) -> list[Phase]:
    book = project.playbook
    phases = [book.phase(i) for i in ids] if ids is not None else list(book.phases)
    if include_validation:
        return phases
    runnable = [p for p in phases if p.kind != "preflight"]
    if not runnable and phases:
        p = phases[0]
        raise InputError(f"phase {p.id} ({p.name}) is validation: run `swarm preflight`; "
                         "every deploy runs it first")
    return runnable


def _scope(phase: Phase, project: Project, chosen: set[str] | None) -> PhaseScope:
    nodes = [project.inventory.node(h) for h in phase.hosts]
    if chosen is not None:
        nodes = [n for n in nodes if n.name in chosen]
    return PhaseScope(phase=phase, nodes=tuple(nodes))


def _nothing_selected(project: Project, phases: Sequence[int] | None, limit: str | None) -> str:
    which = ", ".join(map(str, phases)) if phases else "any phase"
    hosts = sorted({h for p in project.playbook.phases if phases is None or p.id in phases
                    for h in p.hosts})
    return (f"--limit {limit!r} matches no host of phase {which} (its hosts: {', '.join(hosts)})"
            if limit else f"phase {which} has no hosts")


def node_names(nodes: Iterable[Node]) -> list[str]:
    return [n.name for n in nodes]
