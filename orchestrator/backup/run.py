"""`swarm backup`: every target backed up on its node, checksummed, kept as long as its
retention says, and copied to another node where the inventory asks for it.

Per node, under the node's deploy lock (the same lock a deploy takes, through the same
session — engine/session.py — so the two never overlap), its targets one after the other:

1. lock, then look, and list the backups the node holds (one command);
2. per service: a fresh `.tmp-<id>` directory, the method's dump (pg_dump, BGSAVE + the
   RDB file, Qdrant snapshots copied out of the container, a frozen copy of Vault's
   storage) and its SHA256SUMS (one command; Qdrant's snapshots are made and removed
   through its API around it);
3. per service: its manifest written and the directory renamed into place, the backups
   retention no longer keeps deleted (one command); a copy goes to `copy_to` through the
   controller (files read and written as bytes, verified with `sha256sum -c` there);
4. the final listing (what the gauges report), one audit line per service, unlock.

Nodes run in parallel. A failed service never stops the others; its temp directory is
removed. A signal (SIGTERM from systemd stopping the timer's unit, ^C) lets the service
being backed up finish, skips the rest, and still writes the audit and unlocks (exit
128 + the signal). Nothing here prints a file name of a backup that contains secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from orchestrator import __version__
from orchestrator.addresses import host_port
from orchestrator.backup.model import (
    Listing,
    Manifest,
    human_size,
    parse_listing,
    to_prune,
    total_size,
)
from orchestrator.backup.qdrant import QdrantApi, Snapshot
from orchestrator.backup.record import check_bytes, keep_record
from orchestrator.commands import Command, Script, StepResult
from orchestrator.commands import backup as bcmd
from orchestrator.config.project import Project
from orchestrator.engine.context import RunContext, new_run, whoami
from orchestrator.engine.session import Look, Session, lock_problem
from orchestrator.engine.signals import Interrupts
from orchestrator.engine.steps import audit_line
from orchestrator.errors import RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import LookRequest
from orchestrator.render.backups import Target, new_id
from orchestrator.secrets import scrub
from orchestrator.transport.base import Transport
from orchestrator.transport.fleet import Fleet

DUMP_TIMEOUT_S = 3600.0
BGSAVE_TIMEOUT_S = 600


@dataclass
class Outcome:
    """What happened to one target."""

    target: Target
    ok: bool = False
    backup_id: str | None = None
    manifest: Manifest | None = None
    pruned: tuple[str, ...] = ()
    copied_to: str | None = None
    copy_error: str | None = None
    error: str | None = None
    skipped: bool = False          # an optional node that did not answer
    lock_held: bool = False

    @property
    def directory(self) -> str | None:
        return self.target.directory(self.backup_id) if self.backup_id else None


@dataclass
class BackupReport:
    backup_id: str
    outcomes: list[Outcome]
    listings: dict[str, Listing] = field(default_factory=dict)
    duration_s: float = 0.0
    finished_at: float = field(default_factory=time.time)
    signum: int | None = None      # the signal that stopped the run early

    @property
    def exit_code(self) -> int:
        if self.signum is not None:
            return 128 + self.signum
        if any(o.lock_held for o in self.outcomes):
            return 4
        failed = [o for o in self.outcomes if not o.ok and not o.skipped]
        return 1 if failed or any(o.copy_error for o in self.outcomes) else 0


# ---------------------------------------------------------------- the run


async def backup(project: Project, targets: Sequence[Target], bus: EventBus, *,
                 fleet: Fleet | None = None, http: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time, by: str | None = None,
                 interrupts: Interrupts | None = None) -> BackupReport:
    """Back up every target (see the module docstring); per-target outcomes, never the first error."""
    started = time.monotonic()
    ctx = new_run(by or whoami(), "backup", sorted({t.phase for t in targets}))
    run = _Run(project, list(targets), bus, ctx, new_id(clock()), http, interrupts)
    nodes = [project.inventory.node(n) for n in sorted({t.node for t in targets} | {t.copy_to for t in targets if t.copy_to})]
    optional = {n.name for n in nodes if n.spec.optional}
    fleet = fleet or Fleet.for_nodes(project.inventory, nodes, optional=optional)
    async with Session(fleet, ctx, bus, {n.name: n.deploy_root for n in nodes}, frozenset(optional)) as session:
        await session.connect(required=False)
        await run.all(session)
    signum = interrupts.signum if interrupts is not None and interrupts.requested else None
    return BackupReport(run.backup_id, run.outcomes, run.listings, time.monotonic() - started, signum=signum)


class _Run:
    def __init__(self, project: Project, targets: list[Target], bus: EventBus, ctx: RunContext, backup_id: str,
                 http: httpx.AsyncBaseTransport | None, interrupts: Interrupts | None = None) -> None:
        self.project, self.targets, self.bus, self.ctx = project, targets, bus, ctx
        self.backup_id, self.http, self.interrupts = backup_id, http, interrupts
        self.outcomes: list[Outcome] = []
        self.listings: dict[str, Listing] = {}

    async def all(self, session: Session) -> None:
        by_node: dict[str, list[Target]] = {}
        for target in self.targets:
            by_node.setdefault(target.node, []).append(target)
        for node, unreachable in session.fleet.unreachable.items():
            for target in by_node.pop(node, []):
                self._unreachable(target, unreachable.message)
        results = await asyncio.gather(*(self.node(session, n, ts) for n, ts in by_node.items()),
                                       return_exceptions=True)
        for targets, result in zip(by_node.values(), results, strict=True):
            if isinstance(result, BaseException):
                for target in targets:
                    self._failed(Outcome(target), _first_line(result))

    def _unreachable(self, target: Target, why: str) -> None:
        optional = self.project.inventory.node(target.node).spec.optional
        outcome = Outcome(target, skipped=optional, error=f"{target.node} is unreachable: {why}")
        self.outcomes.append(outcome)
        self.bus.emit("backup", "skipped" if optional else "failed", host=target.node,
                      message=f"{target.service}: {outcome.error}")

    def _failed(self, outcome: Outcome, why: str) -> Outcome:
        outcome.ok, outcome.error = False, scrub(why)
        if not any(o is outcome for o in self.outcomes):
            self.outcomes.append(outcome)
        self.bus.emit("backup", "failed", host=outcome.target.node, message=f"{outcome.target.service}: {why}")
        return outcome

    # ------------------------------------------------------------ one node

    async def node(self, session: Session, node: str, targets: list[Target]) -> None:
        root = session.roots[node]
        listed = bcmd.list_backups(root, [t.service for t in targets])
        state = (await session.look({node: Look(LookRequest(root, reads=False), "force", (listed,))}))[node]
        held = lock_problem(state)
        if held is not None:
            for target in targets:
                self._failed(Outcome(target, lock_held=held.startswith("held")), f"{node}: deploy lock {held}")
            return
        answer = session.extra[node]
        listing = parse_listing(answer[0].stdout) if answer and answer[0].ok else Listing(time.time(), {})
        done: list[Outcome] = []
        try:
            for target in targets:
                if self.interrupts is not None and self.interrupts.requested:
                    done.append(self._failed(Outcome(target), f"not started: {self._signal_name()} stopped the run"))
                    continue
                outcome = await self.one(session.fleet[node], target, listing)
                if outcome.ok and target.copy_to:
                    await self.copy(session.fleet, session.fleet[node], outcome)
                done.append(outcome)
        finally:
            await self.finish(session, node, targets, done)

    def _signal_name(self) -> str:
        signum = self.interrupts.signum if self.interrupts is not None else None
        return signal.Signals(signum).name if signum else "a signal"

    async def finish(self, session: Session, node: str, targets: list[Target], done: list[Outcome]) -> None:
        """The listing the gauges report, one audit line per service, then unlock."""
        lines = b"".join(_audit(node, o, self.ctx) for o in done)
        steps: list[Command] = [bcmd.list_backups(session.roots[node], [t.service for t in targets])]
        if lines:
            steps.append(session.audit_command(node))
        result = await session.unlock(node, before=steps, input=lines or None)
        if result is not None and result.steps and result.steps[0].ok:
            self.listings[node] = parse_listing(result.steps[0].stdout)

    # ------------------------------------------------------------ one service

    async def one(self, transport: Transport, target: Target, listing: Listing) -> Outcome:
        outcome = Outcome(target, backup_id=self.backup_id)
        self.outcomes.append(outcome)
        started = time.monotonic()
        snapshots: list[Snapshot] = []
        try:
            if target.method == "qdrant-snapshot":
                snapshots = await self._snapshots(target)
            sums = await self._dump(transport, target, snapshots)
            manifest = self._manifest(target, sums, snapshots, time.monotonic() - started)
            outcome.pruned = await self._commit(transport, target, manifest, listing)
        except SwarmError as exc:
            await transport.run(bcmd.backup_discard(target.service_dir, self.backup_id), check=False)
            return self._failed(outcome, exc.message)
        finally:
            if snapshots:
                await self._drop_snapshots(target, snapshots)
        outcome.ok, outcome.manifest = True, manifest
        keep_record(self.project.inventory.fleet, manifest)  # what a restore will trust
        self.bus.emit("backup", "ok", host=target.node, message=describe_written(outcome),
                      service=target.service, checksum=manifest.checksum)
        return outcome

    async def _dump(self, transport: Transport, target: Target, snapshots: Sequence[Snapshot]) -> StepResult:
        tmp = f"{target.service_dir}/{bcmd.tmp_name(self.backup_id)}"
        script = Script.of(bcmd.backup_prepare(target.service_dir, self.backup_id),
                           dump_command(target, tmp, snapshots), bcmd.backup_sums(tmp))
        index = (json.dumps({s.collection: s.name for s in snapshots}, sort_keys=True).encode()
                 if target.method == "qdrant-snapshot" else None)
        result = await transport.run(script, check=False, timeout=DUMP_TIMEOUT_S, input=index)
        failed = result.failed_step
        if failed is not None or len(result.steps) < 3:
            raise step_error(target, failed or result.steps[-1])
        return result.steps[2]

    def _manifest(self, target: Target, sums_step: StepResult, snapshots: Sequence[Snapshot],
                  duration: float) -> Manifest:
        sums, sizes, text = bcmd.parse_sums(sums_step.stdout)
        if not sums:
            raise RuntimeFailure(f"{target.service}: the backup wrote no file")
        files = {name: {"size": sizes.get(name, 0), "sha256": digest} for name, digest in sums.items()}
        details: dict[str, Any] = {}
        if target.method == "pg_dump":
            details["databases"] = list(target.options["databases"])
        if snapshots:
            base = target.options["snapshots_dir"].rsplit("/", 1)[-1]
            details["collections"] = {s.collection: {"snapshot": s.name, "file": f"{base}/{s.collection}/{s.name}"}
                                      for s in snapshots}
            _check_snapshot_sums(target, snapshots, sums, base)
        return Manifest(service=target.service, node=target.node, method=target.method, id=self.backup_id,
                        created=time.time(), duration_s=duration, size=total_size(files),
                        checksum=hashlib.sha256(text.encode()).hexdigest(), files=files, version=__version__,
                        contains_secrets=target.contains_secrets, details=details)

    async def _commit(self, transport: Transport, target: Target, manifest: Manifest,
                      listing: Listing) -> tuple[str, ...]:
        prune = to_prune([*(b.id for b in listing.of(target.service)), self.backup_id], keep=target.keep,
                         keep_for=target.keep_for, now=listing.now)
        steps = [bcmd.backup_commit(target.service_dir, self.backup_id)]
        if prune:
            steps.append(bcmd.backup_prune(target.service_dir, prune))
        result = await transport.run(Script.of(*steps), check=False, input=manifest.to_json().encode())
        if result.failed_step is not None:
            raise step_error(target, result.failed_step)
        return tuple(prune)

    # ------------------------------------------------------------ Qdrant's API

    def _api(self, client: httpx.AsyncClient, target: Target) -> QdrantApi:
        opts = target.options
        return QdrantApi(client, f"{opts['scheme']}://{host_port(target.address, opts['port'])}", target.service)

    async def _snapshots(self, target: Target) -> list[Snapshot]:
        async with httpx.AsyncClient(transport=self.http) as client:
            api = self._api(client, target)
            made: list[Snapshot] = []
            try:
                for collection in await api.collections():
                    made.append(await api.create_snapshot(collection))
            except SwarmError:
                await self._drop_snapshots(target, made)
                raise
            return made

    async def _drop_snapshots(self, target: Target, snapshots: Sequence[Snapshot]) -> None:
        """Remove the snapshots this run made inside Qdrant (their copies are in the backup)."""
        async with httpx.AsyncClient(transport=self.http) as client:
            api = self._api(client, target)
            for snap in snapshots:
                try:
                    await api.delete_snapshot(snap.collection, snap.name)
                except SwarmError as exc:
                    self.bus.emit("backup", "info", host=target.node, message=f"{target.service}: {exc.message}")

    # ------------------------------------------------------------ the copy on another node

    async def copy(self, fleet: Fleet, source: Transport, outcome: Outcome) -> None:
        target, manifest = outcome.target, outcome.manifest
        assert manifest is not None and target.copy_to is not None
        if target.copy_to not in fleet or target.copy_to in fleet.unreachable:
            why = fleet.unreachable[target.copy_to].message if target.copy_to in fleet.unreachable else "not connected"
            outcome.copy_error = f"{target.copy_to}: {why}"
        else:
            try:
                await copy_backup(source, fleet[target.copy_to], target, manifest,
                                  self.project.inventory.node(target.copy_to).deploy_root)
                outcome.copied_to = target.copy_to
            except SwarmError as exc:
                outcome.copy_error = exc.message
        if outcome.copy_error:
            self.bus.emit("backup", "failed", host=target.copy_to,
                          message=f"{target.service}: the copy to {target.copy_to} failed: {outcome.copy_error}")
        else:
            self.bus.emit("backup", "ok", host=target.copy_to,
                          message=f"{target.service}: copy {manifest.id} verified on {target.copy_to}")


async def copy_backup(source: Transport, dest: Transport, target: Target, manifest: Manifest,
                      dest_root: str, *, trusted: bool = False) -> None:
    """One backup from its node to another, through the controller: every file read and written
    as bytes (0600, in 0700 directories), checked there against its SHA256SUMS, renamed into
    place with its manifest, the copies pruned by the same retention. With `trusted`, `manifest`
    is the controller's record and every file is checked against it on the way (a restore
    bringing a backup back: the source node's own sums prove nothing)."""
    src_dir = target.directory(manifest.id)
    dest_dir = f"{dest_root}/backups/{target.service}"
    tmp = f"{dest_dir}/{bcmd.tmp_name(manifest.id)}"
    first = await dest.run(Script.of(bcmd.list_backups(dest_root, [target.service]),
                                     bcmd.backup_prepare(dest_dir, manifest.id)), check=False)
    if first.failed_step is not None:
        raise step_error(target, first.failed_step)
    listing = parse_listing(first.steps[0].stdout)
    for name in [*manifest.files, bcmd.SUMS_FILE]:
        data = await source.get(f"{src_dir}/{name}")
        try:
            if trusted:
                check_bytes(manifest, name, data, bcmd.SUMS_FILE)
        except RuntimeFailure:
            await dest.run(bcmd.backup_discard(dest_dir, manifest.id), check=False)
            raise
        await dest.put(data, f"{tmp}/{name}", 0o600)
    prune = to_prune([*(b.id for b in listing.of(target.service)), manifest.id], keep=target.keep,
                     keep_for=target.keep_for, now=listing.now)
    steps = [bcmd.backup_verify(tmp), bcmd.backup_commit(dest_dir, manifest.id)]
    if prune:
        steps.append(bcmd.backup_prune(dest_dir, prune))
    result = await dest.run(Script.of(*steps), check=False, input=manifest.to_json().encode())
    if result.failed_step is not None:
        await dest.run(bcmd.backup_discard(dest_dir, manifest.id), check=False)
        raise step_error(target, result.failed_step)


# ---------------------------------------------------------------- pieces


def dump_command(target: Target, directory: str, snapshots: Sequence[Snapshot] = ()) -> Command:
    """The method's dump into `directory` (see commands/backup.py)."""
    opts = target.options
    if target.method == "pg_dump":
        return bcmd.pg_dump(target.project, target.service, directory, opts["user"], opts["databases"])
    if target.method == "redis-rdb":
        rdb = f"{opts['data_dir']}/{opts['rdb_file']}"
        return bcmd.redis_bgsave(target.project, target.service, directory, rdb, BGSAVE_TIMEOUT_S)
    if target.method == "qdrant-snapshot":
        return bcmd.qdrant_fetch(target.project, target.service, directory, opts["snapshots_dir"],
                                 [(s.collection, s.name) for s in snapshots])
    return bcmd.vault_file_copy(target.project, target.service, directory, opts["storage_dir"])


def _check_snapshot_sums(target: Target, snapshots: Sequence[Snapshot], sums: dict[str, str], base: str) -> None:
    """What was copied out of the container is what Qdrant said it wrote (its sha256)."""
    for snap in snapshots:
        got = sums.get(f"{base}/{snap.collection}/{snap.name}")
        if got is None or (snap.checksum and got != snap.checksum):
            raise RuntimeFailure(f"{target.service}: the copy of snapshot {snap.name} does not match the "
                             f"checksum Qdrant gave ({snap.checksum}, copied {got})")


def step_error(target: Target, step: StepResult) -> RuntimeFailure:
    label = step.command.label or step.command.argv[0]
    lines = [line for line in (step.stderr.strip() or step.stdout.strip()).splitlines() if line.strip()]
    status = "did not finish" if step.exit_status is None else f"exit {step.exit_status}"
    tail = "; ".join(lines[-3:])
    return RuntimeFailure(scrub(f"{target.service} on {target.node}: {label} failed ({status})"
                            + (f": {tail}" if tail else "")))


def describe_written(outcome: Outcome) -> str:
    """What a backup wrote where: a secret one by its checksum only."""
    target, manifest = outcome.target, outcome.manifest
    assert manifest is not None
    where = f"{target.service}: {manifest.id} in {outcome.directory}"
    if target.contains_secrets:
        return (f"{where} (contains secrets: 0600 files in a 0700 directory), sha256 {manifest.checksum}")
    files = ", ".join(sorted(manifest.files))
    return f"{where}: {files} ({human_size(manifest.size)}, {manifest.duration_s:.1f}s), sha256 {manifest.checksum}"


def _audit(node: str, outcome: Outcome, ctx: RunContext) -> bytes:
    target = outcome.target
    data: dict[str, Any] = {"service": target.service, "method": target.method, "backup": outcome.backup_id,
                            "ok": outcome.ok, "run": ctx.run_id}
    if outcome.manifest is not None:
        data.update(checksum=outcome.manifest.checksum, size=outcome.manifest.size)
    if outcome.pruned:
        data["pruned"] = list(outcome.pruned)
    if outcome.copied_to or outcome.copy_error:
        data.update(copied_to=outcome.copied_to, copy_error=outcome.copy_error)
    if outcome.error:
        data["error"] = outcome.error
    return audit_line(node, ctx.action, target.phase, ctx.by, **data)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


async def list_all(project: Project, targets: Sequence[Target], *, fleet: Fleet | None = None
                   ) -> list[dict[str, Any]]:
    """Every target's backups on its node, and its copies on its copy_to node (`swarm backups`)."""
    wanted: dict[str, list[tuple[Target, bool]]] = {}
    for target in targets:
        wanted.setdefault(target.node, []).append((target, False))
        if target.copy_to:
            wanted.setdefault(target.copy_to, []).append((target, True))
    owned = fleet is None
    fleet = fleet or Fleet.for_nodes(project.inventory, [project.inventory.node(n) for n in wanted])

    async def one(transport: Transport) -> Listing:
        root = project.inventory.node(transport.host).deploy_root
        names = sorted({t.service for t, _ in wanted[transport.host]})
        return parse_listing((await transport.run(bcmd.list_backups(root, names))).stdout)

    try:
        await fleet.connect()
        answers = await fleet.map(one, [n for n in wanted if n not in fleet.unreachable])
    finally:
        if owned:
            await fleet.close()
    out = []
    for node, entries in wanted.items():
        answer = answers.get(node)
        error = (fleet.unreachable[node].message if node in fleet.unreachable
                 else _first_line(answer) if isinstance(answer, BaseException) else None)
        for target, is_copy in entries:
            listed = answer.of(target.service) if isinstance(answer, Listing) else ()
            out.append({"service": target.service, "node": node, "copy": is_copy, "error": error,
                        "backups": [{"id": b.id, "size": b.manifest.size if b.manifest else 0,
                                     "checksum": b.manifest.checksum if b.manifest else "?",
                                     "created": b.created} for b in listed]})
    return out
