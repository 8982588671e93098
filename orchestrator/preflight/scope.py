"""What a preflight run covers: the nodes, the services, and who talks to whom.

`scope_for(project, phases, limit)` picks the services of some phases (or of every phase
that deploys services; optional phases and nodes only when asked for by `--phase` or
`--limit`) and the nodes they, or the phases, run on. `dependencies` finds, in each
service's rendered definition and config files, the address:port of a service on
another node — LiteLLM's config names every vLLM, GPT Researcher's env names LiteLLM —
so the network check tests exactly the links the rendered fleet will use.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from orchestrator.config.inventory import Node
from orchestrator.config.project import Project
from orchestrator.errors import InputError
from orchestrator.preflight.checks import Dependency, VramNeed
from orchestrator.render.fleet import FleetRender, render_fleet
from orchestrator.render.plan import make_plan
from orchestrator.render.services import Service, build_services
from orchestrator.render.vllm_memory import MIB


@dataclass(frozen=True)
class Scope:
    """The nodes and services one preflight run checks."""

    phases: tuple[int, ...] | None
    nodes: tuple[Node, ...]
    services: tuple[Service, ...]

    @property
    def phase(self) -> int | None:
        """The one phase checked, if it is one (reports and events name it)."""
        return self.phases[0] if self.phases is not None and len(self.phases) == 1 else None

    def services_on(self, node: str) -> list[Service]:
        return [s for s in self.services if s.node == node]


def scope_for(
    project: Project, phases: Sequence[int] | int | None, limit: str | None = None,
    nodes: Sequence[str] | None = None,
) -> Scope:
    """Services of `phases` (None: every service phase) on the nodes `limit` selects."""
    book, inventory = project.playbook, project.inventory
    wanted_ids = [phases] if isinstance(phases, int) else list(phases) if phases is not None else None
    if wanted_ids is not None:
        wanted_ids = [i for i in wanted_ids if book.phase(i).kind != "preflight"] or None
        # phase 0, validation, is the preflight of every phase
    phase = wanted_ids[0] if wanted_ids is not None and len(wanted_ids) == 1 else None
    explicit_phase = wanted_ids is not None
    phases_list = [book.phase(i) for i in wanted_ids] if wanted_ids is not None else [
        p for p in book.phases if p.kind != "preflight" and not p.spec.optional
    ]
    explicit = {n.name for n in inventory.select(limit)} if limit else None
    wanted = set(nodes) if nodes is not None else explicit
    hosts = [h for p in phases_list for h in p.hosts if h in inventory.nodes]
    chosen = [
        inventory.node(h) for h in dict.fromkeys(hosts)
        if _is_chosen(inventory.node(h), wanted, explicit_phase)
    ]
    if not chosen:
        what = f"phase {phase}" if phase is not None else (
            f"phases {', '.join(map(str, wanted_ids))}" if wanted_ids else "any phase")
        raise InputError(f"--limit {limit!r} matches no host of {what}")
    names = {n.name for n in chosen}
    ids = {p.id for p in phases_list}
    services = tuple(s for s in build_services(project) if s.phase in ids and s.node in names)
    return Scope(tuple(wanted_ids) if wanted_ids is not None else None, tuple(chosen), services)


def _is_chosen(node: Node, wanted: set[str] | None, explicit_phase: bool) -> bool:
    if wanted is not None:
        return node.name in wanted
    return explicit_phase or not node.spec.optional


# --- dependencies between nodes ---------------------------------------------------------


def dependencies(
    fleet: FleetRender, sources: Iterable[Service], everyone: Sequence[Service],
    optional: Iterable[str] = (), coming: Iterable[str] = (),
) -> list[Dependency]:
    """Each (source, service on another node, port) the source's rendered text names;
    `optional` names the services on optional nodes or in optional phases, `coming` the
    services the deploy being checked will bring up itself (an earlier phase of the run)."""
    extra = set(optional)
    soon = set(coming)
    out: list[Dependency] = []
    for source in sources:
        text = _rendered_text(fleet, source)
        for target in everyone:
            if target.node == source.node:
                continue
            out.extend(
                Dependency(source, target, port.port, target.name in extra, target.name in soon)
                for port in target.ports
                if _names_endpoint(text, target.address, port.port)
            )
    return out


def optional_services(project: Project, services: Iterable[Service]) -> set[str]:
    """Services that may legitimately be absent: optional phase or optional node."""
    book, inventory = project.playbook, project.inventory
    return {
        s.name for s in services
        if book.phase(s.phase).spec.optional
        or (s.node in inventory.nodes and inventory.node(s.node).spec.optional)
    }


def _rendered_text(fleet: FleetRender, svc: Service) -> str:
    node = fleet.nodes.get(svc.node)
    files = node.files if node else {}
    prefix = f"config/{svc.name}/"
    configs = [data.decode("utf-8", "replace") for p, data in files.items() if p.startswith(prefix)]
    return "\n".join([json.dumps(svc.compose, default=str), *configs])


def _names_endpoint(text: str, address: str, port: int) -> bool:
    pattern = rf"(?<![\w.-]){re.escape(address)}:{port}(?!\d)"
    return re.search(pattern, text) is not None


# --- VRAM ------------------------------------------------------------------------------------


def vram_needs(project: Project, scope: Scope) -> dict[str, list[VramNeed]]:
    """Per node, what each vLLM instance of the scope will claim, from the plan's estimates."""
    plan = make_plan(project, scope.phase)
    names = {s.name for s in scope.services}
    out: dict[str, list[VramNeed]] = {}
    for node_plan in plan.nodes:
        for card in node_plan.cards:
            total_mib = card.card.total_bytes // MIB
            for est in card.instances:
                if est.service in names:
                    out.setdefault(card.node, []).append(VramNeed(
                        est.service, card.index, round(est.budget_gib * 1024),
                        math.ceil(est.needed_gib * 1024), total_mib))
    return out


def as_needs(needs: Sequence[VramNeed], running: Iterable[str]) -> list[VramNeed]:
    up = set(running)
    return [replace(n, running=n.service in up) for n in needs]


def fleet_render(project: Project, scope: Scope, everyone: Sequence[Service] | None = None) -> FleetRender:
    return render_fleet(project, sorted({s.node for s in scope.services}) or None, for_node=True,
                        services=list(everyone) if everyone is not None else None)
