"""What a preflight run covers: the nodes, the services, and who talks to whom.

A `Scope` is made from the run's selection (engine/selection.py: `Selection.preflight_scope`,
the one selection every command shares) — the chosen phases' services on the chosen nodes,
every service of the playbook (`everyone`), the chosen nodes as rendered, which nodes are
optional — and, once connected, which optional nodes are off. `dependencies` finds, in each
service's rendered definition and config files, the address:port of a service on another
node — LiteLLM's config names every vLLM, GPT Researcher's env names LiteLLM — so the
network check tests exactly the links the rendered fleet will use (never one to a node
that is off: it is named, not waited for).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from orchestrator.addresses import host_port
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project
from orchestrator.preflight.checks import Dependency, VramNeed
from orchestrator.render.fleet import FleetRender
from orchestrator.render.plan import Plan
from orchestrator.render.services import Service
from orchestrator.render.vllm_memory import MIB


@dataclass(frozen=True)
class Scope:
    """The nodes and services one preflight run checks."""

    phases: tuple[int, ...] | None
    nodes: tuple[Node, ...]
    services: tuple[Service, ...]
    everyone: tuple[Service, ...] = ()                   # every service of the playbook
    fleet: FleetRender = field(default_factory=lambda: FleetRender(nodes={}))   # the nodes, rendered
    optional: frozenset[str] = frozenset()               # optional nodes (the selection's rule)
    off: frozenset[str] = frozenset()                    # optional nodes that did not answer
    plan: Callable[[], Plan] | None = field(default=None, compare=False)   # the GPU plan, made once

    @property
    def phase(self) -> int | None:
        """The one phase checked, if it is one (reports and events name it)."""
        return self.phases[0] if self.phases is not None and len(self.phases) == 1 else None

    def services_on(self, node: str) -> list[Service]:
        return [s for s in self.services if s.node == node]

    def without(self, off: Iterable[str]) -> Scope:
        """The scope once these optional nodes turned out to be off: not checked, not probed."""
        gone = frozenset(off)
        return replace(self, off=self.off | gone, nodes=tuple(n for n in self.nodes if n.name not in gone),
                       services=tuple(s for s in self.services if s.node not in gone))


# --- dependencies between nodes ---------------------------------------------------------


def dependencies(
    fleet: FleetRender, sources: Iterable[Service], everyone: Sequence[Service],
    optional: Iterable[str] = (), coming: Iterable[str] = (), off: Iterable[str] = (),
) -> list[Dependency]:
    """Each (source, service on another node, port) the source's rendered text names;
    `optional` names the services on optional nodes or in optional phases, `coming` the
    services the deploy being checked will bring up itself (an earlier phase of the run),
    `off` the nodes that did not answer (their services are named, never probed)."""
    extra, soon, down = set(optional), set(coming), set(off)
    out: list[Dependency] = []
    for source in sources:
        text = _rendered_text(fleet, source)
        for target in everyone:
            if target.node == source.node:
                continue
            out.extend(
                Dependency(source, target, port.port, target.name in extra, target.name in soon,
                           off=target.node in down)
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
    """`text` names address:port, an IPv6 address bracketed as a URL writes it (or bare)."""
    forms = "|".join(re.escape(f) for f in dict.fromkeys((host_port(address, port), f"{address}:{port}")))
    pattern = rf"(?<![\w.-])(?:{forms})(?!\d)"
    return re.search(pattern, text) is not None


# --- VRAM ------------------------------------------------------------------------------------


def vram_needs(scope: Scope) -> dict[str, list[VramNeed]]:
    """Per node, what each vLLM instance of the scope will claim, from the plan's estimates."""
    if scope.plan is None:
        return {}
    names = {s.name for s in scope.services}
    out: dict[str, list[VramNeed]] = {}
    for node_plan in scope.plan().nodes:
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
