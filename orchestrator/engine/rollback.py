"""On-demand rollback and the release list: `swarm rollback`, `swarm releases`, `swarm unlock`.

Rollback brings each chosen node back to its previous release (or `--to` a named one):
compose up of that release's services, the same health gate as a deploy, then `current`
switches back and the audit log says so.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from orchestrator import commands as cmd
from orchestrator.clients.secrets_source import SecretSource
from orchestrator.config.inventory import Node
from orchestrator.config.playbook import GateSpec
from orchestrator.config.project import Project
from orchestrator.engine.deploy import (
    Options,
    audit_line,
    connect_all,
    describe_holder,
    open_transports,
    whoami,
)
from orchestrator.engine.gate import Gate
from orchestrator.errors import InputError, LockHeld, RollbackFailed, RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.render.fleet import render_fleet
from orchestrator.transport.base import Transport


@dataclass(frozen=True)
class ReleaseInfo:
    id: str
    current: bool
    phase: Any
    by: str
    created: str
    applied: dict[str, str]


async def node_releases(t: Transport, node: Node) -> list[ReleaseInfo]:
    result = await t.run(cmd.release_manifests(node.deploy_root))
    lines = result.stdout.splitlines()
    current = lines[0].strip().rsplit("/", 1)[-1] if lines else ""
    out = []
    for line in lines[1:]:
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append(ReleaseInfo(id=data.get("id", "?"), current=data.get("id") == current, phase=data.get("phase"),
                               by=data.get("by", "?"), created=data.get("created", "?"),
                               applied=dict(data.get("applied", {}))))
    return sorted(out, key=lambda r: r.id)


def select_nodes(project: Project, phase: int | None, limit: str | None) -> list[Node]:
    inv = project.inventory
    chosen = inv.select(limit)
    if phase is not None:
        hosts = project.playbook.phase(phase).hosts
        chosen = [n for n in chosen if n.name in hosts]
    if not chosen:
        raise InputError("no node matches the given --phase/--limit")
    return chosen


async def list_releases(project: Project, phase: int | None, limit: str | None,
                        bus: EventBus) -> dict[str, list[ReleaseInfo]]:
    nodes = select_nodes(project, phase, limit)
    transports = open_transports(project, nodes, check=False)
    try:
        await connect_all(transports, bus, phase)
        found = await asyncio.gather(*(node_releases(transports[n.name], n) for n in nodes))
        return {n.name: r for n, r in zip(nodes, found, strict=True)}
    finally:
        await asyncio.gather(*(t.close() for t in transports.values()), return_exceptions=True)


async def unlock(project: Project, limit: str | None, bus: EventBus) -> dict[str, str]:
    nodes = select_nodes(project, None, limit)
    transports = open_transports(project, nodes, check=False)
    broken: dict[str, str] = {}
    try:
        await connect_all(transports, bus, None)
        for node in nodes:
            lock_dir = f"{node.deploy_root}/.lock"
            t = transports[node.name]
            holder = cmd.parse_read_file((await t.run(cmd.lock_holder(lock_dir))).stdout)
            if holder is None:
                continue
            await t.run(cmd.lock_release(lock_dir))
            broken[node.name] = describe_holder(holder)
            bus.emit("lock", "changed", host=node.name, message=f"broke lock held by {broken[node.name]}")
            await t.run(cmd.append_file(f"{node.deploy_root}/audit.log"),
                        input=audit_line(node.name, "unlock", None, whoami(), holder=broken[node.name]))
        return broken
    finally:
        await asyncio.gather(*(t.close() for t in transports.values()), return_exceptions=True)


class Rollback:
    def __init__(self, project: Project, phase: int | None, limit: str | None, to: str | None,
                 bus: EventBus) -> None:
        self.project, self.phase, self.limit, self.to, self.bus = project, phase, limit, to, bus
        self.by = whoami()

    async def run(self) -> dict[str, str]:
        nodes = select_nodes(self.project, self.phase, self.limit)
        transports = open_transports(self.project, nodes, check=False)
        try:
            await connect_all(transports, self.bus, self.phase)
            listing = await asyncio.gather(*(node_releases(transports[n.name], n) for n in nodes))
            targets = {n.name: self._target(n, r) for n, r in zip(nodes, listing, strict=True)}
            moving = [n for n in nodes if targets[n.name] is not None]
            await self._lock(transports, moving)
            try:
                await asyncio.gather(*(self._restore(transports[n.name], n, targets[n.name]) for n in moving))
                await self._gate(transports, moving, targets)
                await asyncio.gather(*(self._switch(transports[n.name], n, targets[n.name]) for n in moving))
            finally:
                await asyncio.gather(*(transports[n.name].run(cmd.lock_release(f"{n.deploy_root}/.lock"),
                                                              check=False) for n in moving),
                                     return_exceptions=True)
            return {n: (t[1].id if t else "") for n, t in targets.items()}
        finally:
            await asyncio.gather(*(t.close() for t in transports.values()), return_exceptions=True)

    def _target(self, node: Node, releases: list[ReleaseInfo]) -> tuple[ReleaseInfo, ReleaseInfo] | None:
        current = next((r for r in releases if r.current), None)
        if current is None:
            raise InputError(f"{node.name} has no current release to roll back from")
        if self.to:
            target = next((r for r in releases if r.id == self.to), None)
            if target is None:
                known = ", ".join(r.id for r in releases) or "none"
                raise InputError(f"{node.name} has no release {self.to!r} (it has: {known})")
        else:
            older = [r for r in releases if r.id < current.id]
            if not older:
                raise InputError(f"{node.name}: no release before {current.id} to roll back to",
                                 hint="`swarm releases` lists what each node keeps")
            target = older[-1]
        if target.id == current.id:
            self.bus.emit("rollback", "unchanged", host=node.name, phase=self.phase,
                          message=f"already on {target.id}")
            return None
        return current, target

    def _services(self, target: Any) -> list[str]:
        names = list(target.applied)
        if self.phase is not None:
            in_phase = {s.name for s in self.project.playbook.phase(self.phase).services}
            names = [n for n in names if n in in_phase]
        return sorted(names)

    async def _lock(self, transports: dict[str, Transport], nodes: list[Node]) -> None:
        holder = json.dumps({"by": self.by, "phase": self.phase, "action": "rollback"}).encode()
        for node in nodes:
            result = await transports[node.name].run(cmd.lock_acquire(f"{node.deploy_root}/.lock"),
                                                     input=holder, check=False)
            if result.exit_status == cmd.LOCK_HELD_EXIT:
                raise LockHeld(f"{node.name}: another deploy holds the lock: {describe_holder(result.stdout)}")
            if not result.ok:
                raise RuntimeFailure(f"{node.name}: cannot take the lock: {result.stderr.strip()[:200]}")

    async def _restore(self, t: Transport, node: Node, pair: Any) -> None:
        current, target = pair
        wanted = self._services(target)
        stale = [n for n in self._services(current) if n not in target.applied]
        file = f"{node.deploy_root}/releases/{target.id}/compose.yml"
        steps = []
        if stale:
            steps.append(cmd.compose_remove(node.project, f"{node.deploy_root}/releases/{current.id}/compose.yml", stale))
        if wanted:
            steps.append(cmd.compose_up(node.project, file, wanted))
        if steps:
            await t.run(cmd.Script.of(*steps))
        self.bus.emit("rollback", "changed", host=node.name, phase=self.phase,
                      message=f"{current.id} -> {target.id}: {', '.join(wanted) or '-'}")

    async def _gate(self, transports: dict[str, Transport], nodes: list[Node], targets: dict[str, Any]) -> None:
        fleet = render_fleet(self.project, [n.name for n in nodes])
        services = [s for n in nodes for s in fleet.nodes[n.name].services
                    if s.name in self._services(targets[n.name][1])]
        if not services:
            return
        source = SecretSource.from_project(self.project)
        bearer = {p.bearer_secret for s in services for p in s.probes if p.bearer_secret}
        secrets = source.read(bearer) if bearer else {}
        spec = self.project.playbook.phase(self.phase).spec.gate if self.phase is not None else GateSpec()
        files = {n.name: f"{n.deploy_root}/releases/{targets[n.name][1].id}/compose.yml" for n in nodes}
        gate = Gate(services=services, transports=transports, compose_files=files, spec=spec, secrets=secrets,
                    thermal_limits={}, bus=self.bus, phase=self.phase or 0)
        try:
            await gate.run()
        except SwarmError as exc:
            raise RollbackFailed(f"rolled back, but the target release is not healthy: {exc.message}") from None

    async def _switch(self, t: Transport, node: Node, pair: Any) -> None:
        current, target = pair
        audit = audit_line(node.name, "rollback", self.phase, self.by, release=target.id, previous=current.id,
                           on_demand=True)
        await t.run(cmd.Script.of(cmd.switch_symlink(f"releases/{target.id}", f"{node.deploy_root}/current"),
                                  cmd.append_file(f"{node.deploy_root}/audit.log")), input=audit)
        self.bus.emit("rollback", "rolled-back", host=node.name, phase=self.phase, message=f"current -> {target.id}")


__all__ = ["Rollback", "list_releases", "unlock", "Options"]
