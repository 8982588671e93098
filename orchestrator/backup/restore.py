"""`swarm restore --service S [--from ID]`: put one backup back, proven healthy after.

Never part of a deploy or a rollback: only this command restores. It runs like this:

1. connect to the service's node, the nodes of what depends on it, and its `copy_to`;
2. take the deploy lock on each of those nodes (the same lock a deploy takes, through the
   same session — engine/session.py: a deploy and a restore never overlap) and list the
   node's backups; the backup is `--from ID` or the
   newest. One that is gone from the node but kept on `copy_to` is brought back first;
3. check it against its own SHA256SUMS (`sha256sum -c`), and that it is this service's;
4. stop the services that depend on it (compose `stop`, from the node's current release);
5. restore by the method: PostgreSQL drops and recreates each database from its dump
   (the container keeps running); Redis and Vault are stopped, their volume refilled by a
   helper container with the same volumes and user, and started again; Qdrant recovers
   each collection from its snapshot through its own API (never stopped or recreated);
6. start the dependents again — also when the restore failed — and gate the service and
   its dependents (`engine.gate.Gate`: came up and stayed up);
7. one audit line on the node, and unlock, on every path.

A signal is honoured at the gate (the only step that waits): the data is back and the
dependents started by then, and the run exits 128 + the signal after audit and unlock.
A protected service (Qdrant on starlord) is refused unless `--force` names it. Vault comes
back sealed (its storage is as it was, keys included): `--key-file` unseals it after the gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from orchestrator.addresses import host_port
from orchestrator.backup.model import Listed, Listing, Manifest, parse_listing
from orchestrator.backup.qdrant import QdrantApi
from orchestrator.backup.record import recorded
from orchestrator.backup.run import copy_backup, step_error
from orchestrator.clients.secrets_source import SecretSource, read_for_gate
from orchestrator.clients.vault import unseal
from orchestrator.commands import Command, Script
from orchestrator.commands import backup as bcmd
from orchestrator.config.project import Project
from orchestrator.engine.context import new_run, whoami
from orchestrator.engine.gate import Gate, GateTarget
from orchestrator.engine.session import Look, Session, lock_problem
from orchestrator.engine.signals import Interrupted, Interrupts, StopRequested
from orchestrator.engine.steps import audit_line
from orchestrator.errors import InputError, LockHeld, RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import LookRequest
from orchestrator.facts.probes import ProbeNetwork
from orchestrator.render.backups import Target, is_id
from orchestrator.render.services import Service, probe_keys
from orchestrator.secrets import Secret
from orchestrator.transport.base import Transport
from orchestrator.transport.fleet import Fleet

RESTORE_TIMEOUT_S = 3600.0


@dataclass
class RestoreResult:
    target: Target
    backup_id: str = ""
    manifest: Manifest | None = None
    from_copy: str | None = None                  # the node the backup was brought back from
    stopped: list[tuple[str, str]] = field(default_factory=list)
    gated: list[str] = field(default_factory=list)
    sealed: bool | None = None                    # Vault, after the restore


def check_request(target: Target, backup_id: str | None, force: str | None) -> None:
    """What can be refused before anything connects: a protected service, a malformed --from."""
    if backup_id is not None and not is_id(backup_id):
        raise InputError(f"--from {backup_id!r}: a backup id is the UTC time it was taken, like "
                         "20261201T031500Z (`swarm backups --service S` lists them)")
    if force is not None and force != target.service:
        raise InputError(f"--force {force!r}: --force names the protected service it lets a restore "
                         f"overwrite, here --force {target.service}")
    if target.protected and force != target.service:
        raise InputError(f"{target.service} is protected on {target.node}: a restore overwrites its data, "
                         f"so it is refused unless --force {target.service} says so",
                         hint="take a backup first (`swarm backup --service "
                              f"{target.service}`), then restore with --force {target.service}")


async def restore(project: Project, target: Target, services: Sequence[Service], bus: EventBus, *,
                  backup_id: str | None = None, key_file: Path | None = None, fleet: Fleet | None = None,
                  http: httpx.AsyncBaseTransport | None = None, network: ProbeNetwork | None = None,
                  interrupts: Interrupts | None = None, by: str | None = None) -> RestoreResult:
    """Restore `target` from `backup_id` (None: its newest backup); see the module docstring."""
    names = sorted({target.node, *(n for n, _ in target.dependents), *([target.copy_to] if target.copy_to else [])})
    nodes = [project.inventory.node(n) for n in names]
    ctx = new_run(by or whoami(), "restore", (target.phase,))
    fleet = fleet or Fleet.for_nodes(project.inventory, nodes)
    job = _Restore(project, target, services, bus, http, network or ProbeNetwork.for_inventory(project.inventory),
                   interrupts)
    try:
        async with Session(fleet, ctx, bus, {n.name: n.deploy_root for n in nodes}) as session:
            await session.connect(required=False)
            return await job.run(session, backup_id, key_file)
    except StopRequested as stop:  # only the gate stops early: the data is back, dependents started
        raise Interrupted(stop.signum, f"restore of {target.service}: {stop} stopped the gate after the data "
                                       f"was restored and its dependents started again",
                          hint="see whether they are healthy with `swarm status`") from None


class _Restore:
    def __init__(self, project: Project, target: Target, services: Sequence[Service], bus: EventBus,
                 http: httpx.AsyncBaseTransport | None, network: ProbeNetwork, interrupts: Interrupts | None) -> None:
        self.project, self.target, self.bus = project, target, bus
        self.services = {s.name: s for s in services}
        self.http, self.network, self.interrupts = http, network, interrupts
        self.result = RestoreResult(target)

    def root(self, node: str) -> str:
        return self.project.inventory.node(node).deploy_root

    def compose_file(self, node: str) -> str:
        return f"{self.root(node)}/current/compose.yml"

    async def run(self, session: Session, backup_id: str | None, key_file: Path | None) -> RestoreResult:
        target = self.target
        needed = {target.node, *(n for n, _ in target.dependents)}
        down = {n: e.message for n, e in session.fleet.unreachable.items() if n in needed}
        if down:
            raise RuntimeFailure("cannot restore: " + "; ".join(f"{n} is unreachable: {w}" for n, w in down.items()))
        error: BaseException | None = None
        try:
            listing = await self.lock_all(session, sorted(needed))
            await self.restore(session.fleet, listing, backup_id, key_file)
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self.finish(session, error)
        return self.result

    # ------------------------------------------------------------ locks

    async def lock_all(self, session: Session, nodes: Sequence[str]) -> Listing:
        """Lock, then look, on each node (the service's own first); its backups listed there."""
        listing = Listing(0.0, {})
        for node in [self.target.node, *(n for n in nodes if n != self.target.node)]:
            then = (bcmd.list_backups(session.roots[node], [self.target.service]),) if node == self.target.node else ()
            look = Look(LookRequest(session.roots[node], reads=False), "force", then)
            problem = lock_problem((await session.look({node: look}))[node])
            if problem is not None:
                error = LockHeld if problem.startswith("held") else RuntimeFailure
                raise error(f"{node}: deploy lock {problem}")
            if node == self.target.node:
                listing = parse_listing(session.extra[node][0].stdout)
        return listing

    async def finish(self, session: Session, error: BaseException | None) -> None:
        """One audit line on the service's node, and every lock released."""
        target, result = self.target, self.result
        for node in sorted(session.locked):
            audit = None
            if node == target.node:
                audit = audit_line(node, "restore", target.phase, session.ctx.by, service=target.service,
                                   method=target.method, backup=result.backup_id or None,
                                   checksum=result.manifest.checksum if result.manifest else None,
                                   from_copy=result.from_copy, ok=error is None, run=session.ctx.run_id,
                                   error=_first_line(error) if error is not None else None)
            try:
                await session.unlock(node, before=(session.audit_command(node),) if audit else (), input=audit)
            except SwarmError as exc:
                self.bus.emit("restore", "failed", host=node, message=f"could not unlock: {exc.message}")

    # ------------------------------------------------------------ the restore itself

    async def restore(self, fleet: Fleet, listing: Listing, backup_id: str | None, key_file: Path | None) -> None:
        target = self.target
        transport = fleet[target.node]
        manifest = await self.choose(fleet, listing, backup_id)
        directory = target.directory(manifest.id)
        verified = await transport.run(Script.of(bcmd.backup_verify(directory)), check=False)
        if verified.failed_step is not None:
            raise RuntimeFailure(f"{target.service}: backup {manifest.id} on {target.node} does not match its "
                                 f"SHA256SUMS, nothing was changed: {_tail(verified.failed_step.stdout)}")
        self.bus.emit("restore", "info", host=target.node,
                      message=f"{target.service}: restoring {manifest.id} (sha256 {manifest.checksum})")
        await self.stop_dependents(fleet)
        try:
            await self.by_method(transport, directory, manifest)
        finally:
            await self.start_dependents(fleet)
        await self.gate(fleet)
        if target.method == "vault-file":
            self.result.sealed = await self.unseal(key_file)

    async def choose(self, fleet: Fleet, listing: Listing, backup_id: str | None) -> Manifest:
        target = self.target
        found = listing.find(target.service, backup_id) if backup_id else listing.newest(target.service)
        if found is None and target.copy_to and target.copy_to in fleet and target.copy_to not in fleet.unreachable:
            found = await self.bring_back(fleet, backup_id)
        if found is None or found.manifest is None:
            have = ", ".join(b.id for b in listing.of(target.service)) or "none"
            what = f"backup {backup_id}" if backup_id else "backup"
            raise InputError(f"--service {target.service}: no {what} of it on {target.node} "
                             f"(backups there: {have})" + (f" or on {target.copy_to}" if target.copy_to else ""))
        trusted = recorded(self.project.inventory.fleet, target.service, found.id)
        if trusted is not None and trusted.checksum != found.manifest.checksum:
            raise RuntimeFailure(f"{target.service}: backup {found.id} on {target.node} is not the one this "
                                 f"controller recorded (sha256 {found.manifest.checksum[:16]}..., recorded "
                                 f"{trusted.checksum[:16]}...): nothing was changed")
        if found.manifest.service != target.service or found.manifest.method != target.method:
            raise RuntimeFailure(f"backup {found.id} in {target.service_dir} is a {found.manifest.method} backup of "
                                 f"{found.manifest.service}, not of {target.service}: nothing was changed")
        self.result.backup_id, self.result.manifest = found.id, found.manifest
        return found.manifest

    async def bring_back(self, fleet: Fleet, backup_id: str | None) -> Listed | None:
        """The backup from `copy_to` to the service's node (verified there), when the node lost it."""
        target = self.target
        assert target.copy_to is not None
        copy_root = self.root(target.copy_to)
        answer = await fleet[target.copy_to].run(bcmd.list_backups(copy_root, [target.service]), check=False)
        copies = parse_listing(answer.stdout)
        found = copies.find(target.service, backup_id) if backup_id else copies.newest(target.service)
        if found is None or found.manifest is None:
            return None
        trusted = recorded(self.project.inventory.fleet, target.service, found.id)
        if trusted is None:  # the copy node's own manifest and SHA256SUMS prove nothing
            raise RuntimeFailure(
                f"{target.service}: backup {found.id} is kept only on {target.copy_to}, and this controller has "
                "no record of it (it records every backup it makes): a copy that only its node vouches for "
                "is not restored", hint=f"check the copy by hand, or restore one this controller made "
                                        f"(`swarm backups --service {target.service}`)")
        on_copy_node = replace(target, deploy_root=copy_root)
        await copy_backup(fleet[target.copy_to], fleet[target.node], on_copy_node, trusted, target.deploy_root,
                          trusted=True)
        self.result.from_copy = target.copy_to
        self.bus.emit("restore", "info", host=target.node,
                      message=f"{target.service}: brought {found.id} back from {target.copy_to}, every file "
                              "matching this controller's record")
        return Listed(found.service, found.id, trusted)

    async def by_method(self, transport: Transport, directory: str, manifest: Manifest) -> None:
        target, opts = self.target, self.target.options
        if target.method == "pg_dump":
            databases = list(manifest.details.get("databases") or opts["databases"])
            await self._run(transport, bcmd.pg_restore(target.project, target.service, directory, opts["user"],
                                                       databases))
        elif target.method == "qdrant-snapshot":
            await self.qdrant(transport, directory, manifest)
        else:
            restore = (bcmd.redis_restore(target.project, target.service, directory, opts["data_dir"],
                                          opts["rdb_file"], opts["aof_dir"], opts["aof_file"])
                       if target.method == "redis-rdb" else
                       bcmd.vault_file_restore(target.project, target.service, directory, opts["storage_dir"]))
            file = self.compose_file(target.node)
            await self._run(transport, bcmd.compose_stop(target.project, file, [target.service]))
            try:
                await self._run(transport, restore)
            finally:
                await self._run(transport, bcmd.compose_start(target.project, file, [target.service]))
        self.bus.emit("restore", "changed", host=target.node, message=f"{target.service}: data restored from "
                                                                      f"{manifest.id}")

    async def qdrant(self, transport: Transport, directory: str, manifest: Manifest) -> None:
        target, opts = self.target, self.target.options
        collections: Mapping[str, dict[str, str]] = manifest.details.get("collections") or {}
        async with httpx.AsyncClient(transport=self.http) as client:
            api = QdrantApi(client, f"{opts['scheme']}://{host_port(target.address, opts['port'])}", target.service)
            for collection, entry in sorted(collections.items()):
                name = entry["snapshot"]
                await self._run(transport, bcmd.qdrant_put(target.project, target.service, directory,
                                                           opts["snapshots_dir"], collection, name))
                checksum = str(manifest.files.get(entry["file"], {}).get("sha256") or "") or None
                try:
                    await api.recover(collection, f"file://{opts['snapshots_dir']}/{collection}/{name}", checksum)
                finally:
                    await _quietly(api.delete_snapshot(collection, name))
                self.bus.emit("restore", "changed", host=target.node,
                              message=f"{target.service}: collection {collection} recovered from {name}")

    async def _run(self, transport: Transport, command: Command) -> None:
        result = await transport.run(Script.of(command), check=False, timeout=RESTORE_TIMEOUT_S)
        if result.failed_step is not None:
            raise step_error(self.target, result.failed_step)

    # ------------------------------------------------------------ around it

    def _dependents_by_node(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for node, service in self.target.dependents:
            out.setdefault(node, []).append(service)
        return out

    async def stop_dependents(self, fleet: Fleet) -> None:
        for node, names in self._dependents_by_node().items():
            project = self.project.inventory.node(node).project
            await self._run(fleet[node], bcmd.compose_stop(project, self.compose_file(node), names))
            self.result.stopped += [(node, n) for n in names]
            self.bus.emit("restore", "info", host=node, message=f"stopped {', '.join(names)} (they depend on "
                                                                f"{self.target.service})")

    async def start_dependents(self, fleet: Fleet) -> None:
        stopped: dict[str, list[str]] = {}
        for node, name in self.result.stopped:
            stopped.setdefault(node, []).append(name)
        for node, names in stopped.items():
            project = self.project.inventory.node(node).project
            await self._run(fleet[node], bcmd.compose_start(project, self.compose_file(node), names))

    async def gate(self, fleet: Fleet) -> None:
        names = [self.target.service, *(n for _, n in self.target.dependents)]
        watched = [self.services[n] for n in names if n in self.services]
        targets = {s.node: GateTarget(fleet[s.node], self.project.inventory.node(s.node).project)
                   for s in watched}
        spec = self.project.playbook.phase(self.target.phase).spec.gate
        gate = Gate(services=watched, targets=targets, spec=spec, secrets=await self._probe_secrets(watched),
                    bus=self.bus, phase=self.target.phase, what="restore", interrupts=self.interrupts,
                    network=self.network)
        await gate.run()
        self.result.gated = names

    async def _probe_secrets(self, watched: Sequence[Service]) -> dict[str, Secret]:
        """The probes' keys; and every secret of the fleet for the scrubber (a gate may show logs)."""
        return await read_for_gate(SecretSource.from_project(self.project), probe_keys(watched))

    async def unseal(self, key_file: Path | None) -> bool | None:
        if key_file is None:
            return None
        source = SecretSource.from_project(self.project)
        status = await asyncio.to_thread(unseal, source.addr, key_file, verify=source.tls()["verify"])  # type: ignore[arg-type]
        return bool(status.sealed)


async def _quietly(work: object) -> None:
    try:
        await work  # type: ignore[misc]
    except SwarmError:
        return


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[-3:]) or "no detail"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
