"""`swarm status`, `swarm releases`, `swarm unlock`: read (or break) what nodes hold.

Status and releases pick their nodes with the run selection (engine/selection.py:
`--phase`, `--limit`, the one optional-node rule) and open them as one `Fleet`, each
optional node with its short connect window. A node that cannot be reached is a per-node
answer, never the end of the command for the others — an optional node that is off says
so. `unlock` breaks a lock through a session (engine/session.py), audited on the node.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator import commands as cmd
from orchestrator.clients.consul import ConsulClient
from orchestrator.config.project import Project
from orchestrator.engine.context import new_run, whoami
from orchestrator.engine.selection import Selection, select
from orchestrator.engine.session import Session
from orchestrator.engine.steps import audit_line
from orchestrator.errors import SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import (
    describe_holder,
    holder_record,
    parse_manifests,
    parse_release_json,
)
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.ssh import target_for


@dataclass(frozen=True)
class ReleaseInfo:
    id: str
    current: bool
    phase: Any
    by: str
    created: str
    applied: dict[str, str]
    action: str = "deploy"
    rolled_back_to: str | None = None


@dataclass
class NodeReleases:
    node: str
    releases: list[ReleaseInfo] = field(default_factory=list)
    error: str | None = None
    optional: bool = False


@dataclass
class NodeStatus:
    node: str
    release: str | None = None
    error: str | None = None
    optional: bool = False
    lock: str | None = None
    services: dict[str, str] = field(default_factory=dict)   # service -> consul status


def chosen(project: Project, phases: tuple[int, ...] | None, limit: str | None) -> Selection:
    """`--phase`/`--limit` as every command reads them (no phase: every phase's nodes)."""
    return select(project, phases, limit, include_validation=True, render=False)


async def list_releases(project: Project, phases: tuple[int, ...] | None, limit: str | None,
                        bus: EventBus) -> list[NodeReleases]:
    sel = chosen(project, phases, limit)
    async with Fleet.for_nodes(project.inventory, sel.nodes, optional=sel.optional) as fleet:
        await fleet.connect()
        answers = await fleet.map(lambda t: t.run(cmd.release_manifests(_root(project, t.host))), fleet.reachable)
    out = []
    for node in sel.nodes:
        entry = NodeReleases(node.name, optional=node.name in sel.optional)
        if node.name in fleet.unreachable:
            entry.error = fleet.unreachable[node.name].message
        elif isinstance(answers.get(node.name), BaseException):
            entry.error = str(answers[node.name]).splitlines()[0]
        else:
            entry.releases = _releases(answers[node.name].stdout)  # type: ignore[union-attr]
        out.append(entry)
    return out


def _root(project: Project, node: str) -> str:
    return project.inventory.node(node).deploy_root


def _releases(stdout: str) -> list[ReleaseInfo]:
    first = stdout.splitlines()[0] if stdout else ""
    current = first.strip().rsplit("/", 1)[-1]
    return [ReleaseInfo(id=str(m["id"]), current=m["id"] == current, phase=m.get("phase"),
                        by=str(m.get("by", "?")), created=str(m.get("created", "?")),
                        applied=dict(m.get("applied", {})), action=str(m.get("action", "deploy")),
                        rolled_back_to=m.get("rolled_back_to"))
            for m in parse_manifests(stdout)]


async def unlock(project: Project, limit: str, bus: EventBus) -> dict[str, str]:
    """Break the deploy lock on the chosen nodes (audited on the node); node -> whose it was."""
    nodes = project.inventory.select(limit)
    ctx = new_run(whoami(), "unlock", ())
    broken: dict[str, str] = {}
    targets = [target_for(project.inventory, n) for n in nodes]
    async with Session.over_ssh(targets, ctx, bus, roots={n.name: n.deploy_root for n in nodes},
                                where=str(project.inventory.path)) as session:
        await session.connect(required=False)

        async def one(name: str) -> None:
            holder = await session.break_lock(name, lambda who: audit_line(name, "unlock", None, ctx.by, holder=who))
            if holder is not None:
                broken[name] = holder
                bus.emit("lock", "changed", host=name, message=f"broke lock held by {holder}")

        result = await session.fleet.map(lambda t: one(t.host), session.fleet.reachable)
        for name, exc in result.failed.items():
            bus.emit("lock", "failed", host=name, message=str(exc).splitlines()[0])
    return broken


async def fleet_status(project: Project, limit: str | None) -> list[NodeStatus]:
    sel = chosen(project, None, limit)
    out = {n.name: NodeStatus(n.name, optional=n.name in sel.optional) for n in sel.nodes}
    health_task = asyncio.ensure_future(asyncio.to_thread(_consul_health, project))
    async with Fleet.for_nodes(project.inventory, sel.nodes, optional=sel.optional) as fleet:
        await fleet.connect()
        answers = await fleet.map(lambda t: _release_and_lock(project, t), fleet.reachable)
    for name, exc in fleet.unreachable.items():
        out[name].error = exc.message
    for name, answer in answers.items():
        if isinstance(answer, BaseException):
            out[name].error = str(answer).splitlines()[0]
        else:
            out[name].release, out[name].lock = answer
    health = await health_task
    unknown = f"unknown ({health['__error__']})" if "__error__" in health else "not registered"
    for svc in sel.selected_services():
        if svc.node in out and out[svc.node].error is None:
            out[svc.node].services[svc.name] = health.get(svc.name, unknown)
    return list(out.values())


async def _release_and_lock(project: Project, t: Any) -> tuple[str | None, str | None]:
    root = _root(project, t.host)
    result = await t.run(cmd.Script.of(cmd.read_file(f"{root}/current/release.json"),
                                       cmd.lock_holder(f"{root}/.lock"), stop_on_error=False), check=False)
    record = parse_release_json(cmd.parse_read_file(result.steps[0].stdout)) if result.steps[0].ok else None
    holder = cmd.parse_read_file(result.steps[1].stdout) if result.steps[1].ok else None
    lock = describe_holder(holder_record(holder)) if holder is not None else None
    return (str(record["id"]) if record else None), lock


def _consul_health(project: Project) -> dict[str, str]:
    try:
        client = ConsulClient.from_inventory(project.inventory.spec.consul, project.inventory.resolve_path)
        return {h.service_id: h.status for h in client.services_with_health()}
    except SwarmError as exc:
        return {"__error__": str(exc).splitlines()[0]}


def as_json(entries: list[NodeReleases]) -> str:
    return json.dumps({e.node: {"error": e.error, "optional": e.optional,
                                "releases": [asdict(r) for r in e.releases]} for e in entries}, indent=2)
