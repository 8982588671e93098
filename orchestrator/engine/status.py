"""`swarm status`: per node, the current release and each service's health in Consul."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from orchestrator import commands as cmd
from orchestrator.config.project import Project
from orchestrator.engine.deploy import connect_all, open_transports
from orchestrator.errors import SwarmError
from orchestrator.events import EventBus
from orchestrator.render.release import parse_release_json
from orchestrator.render.services import build_services


@dataclass
class NodeStatus:
    node: str
    release: str | None = None
    error: str | None = None
    services: dict[str, str] = field(default_factory=dict)   # service -> consul status


async def fleet_status(project: Project, limit: str | None) -> list[NodeStatus]:
    nodes = [n for n in project.inventory.select(limit) if not (n.spec.optional and not limit)]
    transports = open_transports(project, nodes, check=False)
    out = {n.name: NodeStatus(n.name) for n in nodes}
    try:
        try:
            await connect_all(transports, EventBus(), None)
        except SwarmError:
            pass  # per-node errors below
        results = await asyncio.gather(*(transports[n.name].run(cmd.read_file(f"{n.deploy_root}/current/release.json"))
                                         for n in nodes), return_exceptions=True)
        for node, res in zip(nodes, results, strict=True):
            if isinstance(res, BaseException):
                out[node.name].error = str(res).splitlines()[0]
            else:
                data = parse_release_json(cmd.parse_read_file(res.stdout), node.name)
                out[node.name].release = data.get("id") if data else None
    finally:
        await asyncio.gather(*(t.close() for t in transports.values()), return_exceptions=True)
    health = await asyncio.to_thread(_consul_health, project)
    unknown = f"unknown ({health['__error__']})" if "__error__" in health else "not registered"
    for svc in build_services(project):
        if svc.node in out:
            out[svc.node].services[svc.name] = health.get(svc.name, unknown)
    return list(out.values())


def _consul_health(project: Project) -> dict[str, str]:
    from orchestrator.clients.consul import ConsulClient

    try:
        client = ConsulClient(project.inventory.spec.consul.addr)
        return {h.service_id: h.status for h in client.services_with_health()}
    except SwarmError as exc:
        return {"__error__": str(exc).splitlines()[0]}
