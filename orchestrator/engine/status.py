"""`swarm status`, `swarm releases`, `swarm unlock`: read (or break) what nodes hold.

Each picks its nodes with the run selection (`--phase`, `--limit`) and opens them as one
`Fleet`. A node that cannot be reached is a per-node answer, never the end of the command
for the others — an optional node that is off says so and is skipped.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator import commands as cmd
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project
from orchestrator.engine.context import whoami
from orchestrator.engine.selection import select
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


def chosen_nodes(project: Project, phases: tuple[int, ...] | None, limit: str | None) -> list[Node]:
    """`--phase`/`--limit` as every command reads them; no phase: every node of the inventory."""
    if phases is None:
        return project.inventory.select(limit)
    return list(select(project, phases, limit, include_validation=True, render=False).nodes)


async def list_releases(project: Project, phases: tuple[int, ...] | None, limit: str | None,
                        bus: EventBus) -> list[NodeReleases]:
    nodes = chosen_nodes(project, phases, limit)
    async with Fleet.for_nodes(project.inventory, nodes) as fleet:
        await fleet.connect()
        reachable = fleet.reachable
        answers = await fleet.map(lambda t: t.run(cmd.release_manifests(_root(project, t.host))), reachable)
    out = []
    for node in nodes:
        entry = NodeReleases(node.name, optional=node.spec.optional)
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
    broken: dict[str, str] = {}
    async with Fleet.for_nodes(project.inventory, nodes) as fleet:
        await fleet.connect()
        for name, unreachable in fleet.unreachable.items():
            bus.emit("lock", "failed", host=name, message=unreachable.message)

        async def one(node: Node) -> None:
            t = fleet[node.name]
            lock_dir = f"{node.deploy_root}/.lock"
            text = cmd.parse_read_file((await t.run(cmd.lock_holder(lock_dir))).stdout)
            if text is None:
                return
            holder = describe_holder(holder_record(text))
            audit = audit_line(node.name, "unlock", None, whoami(), holder=holder)
            await t.run(cmd.Script.of(cmd.lock_release(lock_dir), cmd.append_file(f"{node.deploy_root}/audit.log")),
                        input=audit)
            broken[node.name] = holder
            bus.emit("lock", "changed", host=node.name, message=f"broke lock held by {holder}")

        by_name = {n.name: n for n in nodes}
        result = await fleet.map(lambda t: one(by_name[t.host]), fleet.reachable)
        for name, exc in result.failed.items():
            bus.emit("lock", "failed", host=name, message=str(exc).splitlines()[0])
    return broken


async def fleet_status(project: Project, limit: str | None) -> list[NodeStatus]:
    nodes = project.inventory.select(limit)
    out = {n.name: NodeStatus(n.name, optional=n.spec.optional) for n in nodes}
    health_task = asyncio.ensure_future(asyncio.to_thread(_consul_health, project))
    async with Fleet.for_nodes(project.inventory, nodes) as fleet:
        await fleet.connect()
        async def one(t: Any) -> tuple[str | None, str | None]:
            root = _root(project, t.host)
            result = await t.run(cmd.Script.of(cmd.read_file(f"{root}/current/release.json"),
                                               cmd.lock_holder(f"{root}/.lock"), stop_on_error=False),
                                 check=False)
            record = parse_release_json(cmd.parse_read_file(result.steps[0].stdout)) if result.steps[0].ok else None
            holder = cmd.parse_read_file(result.steps[1].stdout) if result.steps[1].ok else None
            lock = describe_holder(holder_record(holder)) if holder is not None else None
            return (str(record["id"]) if record else None), lock

        answers = await fleet.map(one, fleet.reachable)
    for name, exc in fleet.unreachable.items():
        out[name].error = exc.message
    for name, answer in answers.items():
        if isinstance(answer, BaseException):
            out[name].error = str(answer).splitlines()[0]
        else:
            out[name].release, out[name].lock = answer
    health = await health_task
    unknown = f"unknown ({health['__error__']})" if "__error__" in health else "not registered"
    from orchestrator.render.services import build_services

    for svc in build_services(project):
        if svc.node in out and out[svc.node].error is None:
            out[svc.node].services[svc.name] = health.get(svc.name, unknown)
    return list(out.values())


def _consul_health(project: Project) -> dict[str, str]:
    from orchestrator.clients.consul import ConsulClient

    try:
        client = ConsulClient.from_inventory(project.inventory.spec.consul, project.inventory.resolve_path)
        return {h.service_id: h.status for h in client.services_with_health()}
    except SwarmError as exc:
        return {"__error__": str(exc).splitlines()[0]}


def as_json(entries: list[NodeReleases]) -> str:
    from dataclasses import asdict

    return json.dumps({e.node: {"error": e.error, "optional": e.optional,
                                "releases": [asdict(r) for r in e.releases]} for e in entries}, indent=2)
