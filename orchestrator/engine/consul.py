"""Consul registration as a deploy step: after a phase's gate passes, register its services;
undo exactly that if the deploy later rolls back; deregister services the playbook dropped.

The undo log (what each touched registration was before) is also written into the
controller's pending-unwind record (`undo_records`), so an unwind finished later by
`swarm rollback --resume` puts Consul back too (`restore_records`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from orchestrator.addresses import host_port
from orchestrator.clients.consul import CheckSpec, ConsulClient, ServiceRegistration, access_of
from orchestrator.clients.consul_read import ConsulAccess
from orchestrator.config.project import Project
from orchestrator.errors import ServiceError
from orchestrator.events import EventBus
from orchestrator.render.services import LOOPBACK, Service


def check_endpoint(svc: Service, port: int) -> tuple[str, int]:
    """Where Consul checks a service: its address, or — published on its node's loopback only —
    its name and container port on the compose network (Consul's agent runs on that network)."""
    published = next((p for p in svc.ports if p.port == port), None)
    if published is not None and published.host_ip == LOOPBACK:
        return svc.name, published.target
    return svc.address, port


def agent_node(project: Project) -> str | None:
    """The node Consul's agent runs on: the one whose address the inventory's consul.addr names."""
    host = urlsplit(str(project.inventory.spec.consul.addr)).hostname
    return next((n.name for n in project.inventory.nodes.values() if n.address == host), None)


def registration(svc: Service, release: str, fleet: str, agent: str | None = None) -> ServiceRegistration:
    """The service's registration; `agent`: the node Consul's agent runs on (None: unknown).

    A port published on its node's loopback only is checked by name on the compose network —
    which only an agent on that same node can reach: on any other node Consul gets no check
    for it (swarm's gate checks it, through the node), rather than one that is always critical."""
    spec = svc.consul
    assert spec is not None
    check = None
    meta_check: dict[str, str] = {}
    if spec.check is not None and agent is not None and svc.node != agent \
            and check_endpoint(svc, spec.check.port)[0] == svc.name:
        meta_check = {"swarm_check": "node-only"}
    elif spec.check is not None:
        scheme = str(svc.vars.get("scheme", "http"))  # roles serving TLS (Vault, Consul) set it
        host, port_ = check_endpoint(svc, spec.check.port)
        where = host_port(host, port_)  # an IPv6 address in brackets
        target = f"{scheme}://{where}{spec.check.path}" if spec.check.kind == "http" else where
        check = CheckSpec(kind="http" if spec.check.kind == "http" else "tcp", target=target, interval=f"{int(spec.check.interval)}s",
                          timeout=f"{int(spec.check.timeout)}s")
    port = spec.check.port if spec.check else (svc.ports[0].port if svc.ports else 0)
    meta = {**spec.meta, **meta_check, "swarm_fleet": fleet, "swarm_node": svc.node, "swarm_release": release,
            "swarm_phase": str(svc.phase), "swarm_image": svc.image}
    return ServiceRegistration(id=svc.name, name=spec.name, address=svc.address, port=port,
                               tags=tuple(spec.tags), meta=meta, check=check)


@dataclass
class ConsulSync:
    addr: str | None
    fleet: str
    bus: EventBus
    settings: Any = field(default=None, repr=False)     # the inventory's consul block (token, TLS)
    resolve: Any = field(default=None, repr=False)      # its paths, relative to the inventory
    agent: str | None = None                            # the node its agent runs on (agent_node)
    undo_log: list[tuple[str, Any]] = field(default_factory=list)

    @classmethod
    def from_project(cls, project: Project, bus: EventBus) -> ConsulSync:
        spec = project.inventory.spec.consul
        return cls(addr=str(spec.addr) if spec.register_services else None, fleet=project.inventory.fleet,
                   bus=bus, settings=spec, resolve=project.inventory.resolve_path, agent=agent_node(project))

    def _client(self) -> ConsulClient:
        """A client as the inventory says (token file refused when others can read it, TLS files)."""
        assert self.addr is not None
        if self.settings is None:
            return ConsulClient(self.addr)
        return ConsulClient.from_inventory(self.settings, self.resolve)

    def access(self) -> ConsulAccess:
        """Where the agent is and how to talk to it (the inventory's consul block)."""
        assert self.addr is not None
        if self.settings is None:
            return ConsulAccess(addr=self.addr)
        return access_of(self.settings, self.resolve)

    async def register(self, phase: int, services: list[Service], releases: dict[str, str]) -> None:
        wanted = [s for s in services if s.consul is not None]
        if self.addr is None or not wanted:
            return
        await asyncio.to_thread(self._register_sync, phase, wanted, releases)

    def _register_sync(self, phase: int, services: list[Service], releases: dict[str, str]) -> None:
        client = self._client()
        before = client.registrations()
        keep = {s.name for s in services}
        for svc in services:
            reg = registration(svc, releases.get(svc.node, ""), self.fleet, self.agent)
            self.undo_log.append((reg.id, before.get(reg.id)))
            changed = client.register(reg)
            self.bus.emit("consul", "changed" if changed else "unchanged", host=svc.node, phase=phase,
                          message=f"{reg.id} as {reg.name} at {host_port(reg.address, reg.port)}")
        for sid, old in before.items():
            meta = old.meta
            if (meta.get("swarm_fleet") == self.fleet and meta.get("swarm_phase") == str(phase)
                    and meta.get("swarm_node") in releases and sid not in keep):
                self.undo_log.append((sid, old))
                client.deregister(sid)
                self.bus.emit("consul", "changed", host=meta.get("swarm_node"), phase=phase,
                              message=f"{sid} deregistered (no longer in the playbook)")

    async def undo(self) -> None:
        """Put every registration this run touched back exactly as it was (checks included)."""
        if self.addr is None or not self.undo_log:
            return
        await asyncio.to_thread(self._undo_sync)

    def _undo_sync(self) -> None:
        client = self._client()
        for sid, old in reversed(self.undo_log):
            try:
                if old is None:
                    client.deregister(sid)
                else:
                    client.register(old)
                self.bus.emit("consul", "rolled-back", message=f"{sid} restored")
            except ServiceError as exc:
                self.bus.emit("consul", "failed", message=f"could not restore {sid}: {exc}")
        self.undo_log.clear()


    def undo_records(self) -> list[list[Any]]:
        """The undo log as JSON-able data: [service id, registration before or None]."""
        return [[sid, registration_record(old) if old is not None else None]
                for sid, old in self.undo_log]

    def restore_records(self, records: list[list[Any]]) -> None:
        """Load an undo log saved by `undo_records` (to finish an unwind)."""
        self.undo_log = [(str(sid), registration_from_record(rec) if rec else None)
                         for sid, rec in records]


def registration_record(reg: Any) -> dict[str, Any]:
    check = reg.check
    return {"id": reg.id, "name": reg.name, "address": reg.address, "port": reg.port,
            "tags": list(reg.tags), "meta": dict(reg.meta),
            "check": None if check is None else {
                "kind": check.kind, "target": check.target, "interval": check.interval,
                "timeout": check.timeout, "deregister_after": check.deregister_after}}


def registration_from_record(record: dict[str, Any]) -> ServiceRegistration:
    check = record.get("check")
    return ServiceRegistration(id=record["id"], name=record["name"], address=record["address"],
                               port=int(record["port"]), tags=tuple(record.get("tags", ())),
                               meta=dict(record.get("meta", {})),
                               check=CheckSpec(**check) if check else None)
