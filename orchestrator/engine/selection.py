"""What one run covers, computed once and shared: phases, nodes, rendered services, releases.

`select(project, phases, limit)` is the one selection of deploy, rollback, status,
releases, preflight, verify and backup, so every command picks by the same rules:

* `--phase 3`, `--phase 2-4`, `--phase 2,4` (engine/phases.py: nothing else); none:
  every phase of the playbook, in order. Validation phases (kind `preflight`) are what
  every deploy runs first, not a deploy of their own; for the checking commands
  (preflight, verify) a selector of validation phases only means every phase.
* `--limit` names nodes or groups; a phase none of whose nodes is chosen drops out.
* **one optional-node rule**: a node marked `optional: true`, or one that only runs
  optional phases, is in the selection like any other; it gets a short connect window,
  and when it does not answer in time it is skipped — reported, never fatal for the
  others, its services left out, and nobody else's checks wait for it (`without`).

The playbook's services are built once and the chosen nodes rendered once (node layout,
content-addressed config store); each node's release content per phase is built once
(`content`), the GPU plan made once (`plan`). Everything downstream reads them from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.config.inventory import Node
from orchestrator.config.playbook import Phase
from orchestrator.config.project import Project
from orchestrator.engine.phases import ranges
from orchestrator.errors import InputError
from orchestrator.preflight.scope import Scope
from orchestrator.render.fleet import FleetRender, render_fleet
from orchestrator.render.plan import Plan, make_plan
from orchestrator.render.release import ReleaseContent, build_release
from orchestrator.render.services import Service, build_services, secrets_of
from orchestrator.secrets import Secret


def parse_phases(text: str | None, project: Project) -> tuple[int, ...] | None:
    """`3`, `2-4`, `2,4`, `1-2,4` -> phase ids in playbook order; None (no selector): every phase."""
    if text is None:
        return None
    known = [p.id for p in project.playbook.phases]
    wanted: set[int] = set()
    for lo, hi in ranges(text):
        ids = [p for p in known if lo <= p <= hi]
        if not ids:
            part = str(lo) if lo == hi else f"{lo}-{hi}"
            raise InputError(f"no phase {part} in {project.playbook.path} (phases: {', '.join(map(str, known))})")
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
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def nodes(self) -> tuple[Node, ...]:
        seen: dict[str, Node] = {}
        for scope in self.phases:
            for node in scope.nodes:
                seen.setdefault(node.name, node)
        return tuple(seen.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    @property
    def phase_ids(self) -> tuple[int, ...]:
        return tuple(s.id for s in self.phases)

    def is_optional(self, node: str) -> bool:
        """The one rule: `optional: true` on the node, or every phase it is selected in is optional."""
        scopes = [s for s in self.phases if node in s.names]
        return self.project.inventory.node(node).spec.optional or bool(scopes) and all(
            s.phase.spec.optional for s in scopes)

    @property
    def optional(self) -> frozenset[str]:
        return frozenset(n for n in self.names if self.is_optional(n))

    def services_of(self, phase: int, node: str) -> tuple[Service, ...]:
        """The phase's services on the node, as rendered for it (config store paths)."""
        render = self.fleet.nodes.get(node)
        return tuple(s for s in render.services if s.phase == phase) if render else ()

    def phase_services(self, phase: int) -> tuple[Service, ...]:
        scope = next(s for s in self.phases if s.id == phase)
        return tuple(s for n in scope.names for s in self.services_of(phase, n))

    def selected_services(self) -> tuple[Service, ...]:
        """The chosen phases' services on the chosen nodes (rendered for their node)."""
        if not self.fleet.nodes:  # not rendered (status, releases): the playbook's own
            names = set(self.names)
            return tuple(s for s in self.services if s.phase in self.phase_ids and s.node in names)
        return tuple(s for scope in self.phases for s in self.phase_services(scope.id))

    def secrets_needed(self) -> set[str]:
        return secrets_of(self.selected_services())

    def phases_of(self, node: str) -> tuple[PhaseScope, ...]:
        return tuple(s for s in self.phases if node in s.names)

    def without(self, nodes: Mapping[str, str]) -> Selection:
        """The same run minus some (optional, unreachable) nodes; phases left empty drop out."""
        if not nodes:
            return self
        phases = tuple(replace(s, nodes=tuple(n for n in s.nodes if n.name not in nodes))
                       for s in self.phases)
        return replace(self, phases=tuple(p for p in phases if p.nodes),
                       skipped={**self.skipped, **nodes}, _memo=self._memo)

    def content(self, node: str, phase: int, secrets: Mapping[str, Secret]) -> ReleaseContent:
        """The release a phase deploy writes on the node (env files for its own services): built
        once per node and phase, for the run's secrets."""
        key = ("content", node, phase, id(secrets))
        if key not in self._memo:
            render = self.fleet.nodes[node]
            names = {s.name for s in render.services if s.phase == phase}
            self._memo[key] = build_release(render, dict(secrets), only=names)
        content: ReleaseContent = self._memo[key]
        return content

    def preflight_scope(self, nodes: Iterable[str] | None = None) -> Scope:
        """What preflight checks of this run (on `nodes`, default all): their services, every
        service (links between nodes), the rendered nodes, the optional ones and those off."""
        wanted = set(self.names if nodes is None else nodes)
        chosen = tuple(n for n in self.nodes if n.name in wanted)
        return Scope(phases=self.phase_ids, nodes=chosen, everyone=self.services, fleet=self.fleet,
                     services=tuple(s for s in self.selected_services() if s.node in wanted),
                     optional=self.optional & wanted, off=frozenset(self.skipped), plan=self.plan)

    def plan(self) -> Plan:
        """The GPU plan of the whole project (made once: preflight's VRAM check reads it)."""
        if "plan" not in self._memo:
            self._memo["plan"] = make_plan(self.project, None)
        found: Plan = self._memo["plan"]
        return found


def select(project: Project, phases: Sequence[int] | None, limit: str | None, *,
           include_validation: bool = False, render: bool = True,
           services: Sequence[Service] | None = None) -> Selection:
    """The run's phases and nodes; every service built once (or given), the chosen nodes rendered once."""
    chosen = {n.name for n in project.inventory.select(limit)} if limit else None
    scopes = [_scope(p, project, chosen) for p in _phases(project, phases, include_validation)]
    kept = tuple(s for s in scopes if s.nodes)
    if not kept:
        raise InputError(_nothing_selected(project, phases, limit))
    services = list(services) if services is not None else build_services(project)
    names = list(dict.fromkeys(n.name for s in kept for n in s.nodes))
    fleet = (render_fleet(project, names, for_node=True, services=services) if render
             else FleetRender(nodes={}))
    return Selection(project=project, phases=kept, services=tuple(services), fleet=fleet)


def checked_phases(project: Project, ids: Sequence[int] | None) -> tuple[int, ...] | None:
    """For the checking commands (preflight, verify): validation phases only means every phase."""
    if ids is not None and all(project.playbook.phase(i).kind == "preflight" for i in ids):
        return None
    return tuple(ids) if ids is not None else None


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
