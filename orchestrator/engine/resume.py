"""Finishing an unwind that was cut off: `swarm rollback --resume`, and the start of any later run.

A second signal, a dead link or a killed process can leave a phase's unwind unfinished; the
runner kept, in the controller's pending record (engine/pending.py), exactly what each node
still has to undo and which Consul registrations to put back. `resume_pending` finishes it
over a session of its own that runs as the cut-off run (its run id: the node's lock still
carries that run's marker, so the lock is taken back, never someone else's): the recorded
undo per node with an audit line, a re-gate of what it brought back (a short hold: it was
healthy before), Consul as it was, then unlock. A deploy or rollback of any of those nodes
calls it before it does anything else. `forget_pending` drops a record that can never finish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from orchestrator.clients.secrets_source import SecretSource, read_for_gate
from orchestrator.config.playbook import GateSpec
from orchestrator.config.project import Project
from orchestrator.engine.consul import ConsulSync
from orchestrator.engine.context import Boundaries, RunContext, whoami
from orchestrator.engine.gate import Gate, GateTarget
from orchestrator.engine.journal import RESTORE_HOLD, clock_of
from orchestrator.engine.pending import Pending, PendingStore
from orchestrator.engine.runner import describe_cause
from orchestrator.engine.session import Look, Session
from orchestrator.engine.signals import Interrupts
from orchestrator.engine.steps import audit_line, unwind_script
from orchestrator.errors import InputError, LockHeld, RollbackFailed, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import LookRequest
from orchestrator.facts.probes import ProbeNetwork
from orchestrator.paths import local_state_dir
from orchestrator.render.fleet import render_fleet
from orchestrator.render.services import probe_keys
from orchestrator.transport.base import check_result
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.ssh import target_for


async def resume_pending(project: Project, bus: EventBus, *, limit_to: set[str] | None,
                         interrupts: Interrupts, only_if_overlap: set[str] | None = None,
                         required: bool = False, world: Boundaries | None = None) -> bool:
    """Finish a cut-off unwind recorded on this controller; False when there is none to finish
    (`world`: a test's boundaries)."""
    world = world or Boundaries()
    store = PendingStore(world.state_dir or local_state_dir(), project.inventory.fleet)
    pending = store.load()
    overlap = limit_to if limit_to is not None else only_if_overlap
    if pending is None or not pending.nodes and not pending.consul:
        if required:
            bus.emit("rollback", "unchanged", message="no interrupted rollback to finish")
        return False
    if overlap is not None and not set(pending.nodes) & overlap and not required:
        return False
    if pending.still_running():
        who = f"run {pending.run_id} (pid {pending.pid}, {pending.by})"
        raise LockHeld(f"another deploy holds the lock of phase {pending.phase} on "
                       f"{', '.join(pending.nodes)}: {who} is still running",
                       hint="wait for it to finish; it finishes its own rollback if it fails")
    bus.emit("rollback", "start", phase=pending.phase,
             message=f"finishing the rollback of phase {pending.phase} that run {pending.run_id} left "
                     f"({pending.reason or 'cut off'}) on {', '.join(pending.nodes) or 'Consul only'}")
    async with session_of(project, pending, bus, world.fleet) as session:
        await session.connect(required=False)
        if session.fleet.unreachable:
            name, exc = next(iter(session.fleet.unreachable.items()))
            raise RollbackFailed(f"{name} is still unreachable ({exc.message}): the interrupted rollback "
                                 f"of phase {pending.phase} cannot finish yet",
                                 hint="run `swarm rollback --resume` again when it answers")
        await _resume_nodes(project, bus, session, pending, interrupts, world.network)
    consul = world.consul or ConsulSync.from_project(project, bus)
    consul.restore_records(pending.consul)
    await consul.undo()
    store.clear()
    bus.emit("rollback", "ok", phase=pending.phase, message="the interrupted rollback is finished")
    return True


def session_of(project: Project, pending: Pending, bus: EventBus, fleet: Fleet | None = None) -> Session:
    """A session that runs as the cut-off run (its id is in the lock it left)."""
    ctx = RunContext(run_id=pending.run_id, by=whoami(), action="rollback", phases=(pending.phase,))
    nodes = [project.inventory.node(n) for n in pending.nodes]
    roots = {n.name: n.deploy_root for n in nodes}
    if fleet is not None:
        return Session(fleet, ctx, bus, roots)
    return Session.over_ssh([target_for(project.inventory, n) for n in nodes], ctx, bus, roots=roots,
                            where=str(project.inventory.path))


async def _resume_nodes(project: Project, bus: EventBus, session: Session, pending: Pending,
                        interrupts: Interrupts, network: ProbeNetwork | None) -> None:
    looks = {n: Look(LookRequest(deploy_root=session.roots[n], docker=False), "force") for n in pending.nodes}
    await session.look(looks)
    for name in looks:
        session.require_lock(name)
    clocks: dict[str, float | None] = {}

    async def one(name: str) -> None:
        record = pending.nodes[name]
        if record.undone:  # only the re-check is left
            clocks[name] = None
            return
        audit = audit_line(name, "rollback", pending.phase, session.ctx.by, release=record.previous,
                           failed=record.failed_release, reason=f"resumed: {pending.reason}", resumed=True)
        node = project.inventory.node(name)
        result = await session.fleet[name].run(unwind_script(node, record.commands()), input=audit, check=False)
        check_result(name, result)
        clocks[name] = clock_of(result)
        bus.emit("rollback", "changed", host=name, phase=pending.phase, message=f"restored {record.previous or 'empty'}")

    outcome = await session.fleet.map(lambda t: one(t.host), list(pending.nodes))
    if outcome.failed:
        name, exc = next(iter(outcome.failed.items()))
        if isinstance(exc, SwarmError) and exc.exit_code == 4:
            raise exc
        raise RollbackFailed(f"{name}: the interrupted rollback failed again: {describe_cause(exc)}",
                             hint=f"inspect {name} by hand: docker compose -p swarm-{name} ps")
    await _regate(project, bus, session, pending, clocks, interrupts, network)


async def _regate(project: Project, bus: EventBus, session: Session, pending: Pending,
                  clocks: Mapping[str, float | None], interrupts: Interrupts, network: ProbeNetwork | None) -> None:
    names = sorted(pending.nodes)
    rendered = render_fleet(project, names, for_node=True)
    services = [s for n in names for s in rendered.nodes[n].services if s.name in pending.nodes[n].restore]
    if not services:
        return
    try:
        spec = project.playbook.phase(pending.phase).spec.gate
    except InputError:
        spec = GateSpec()
    targets = {n: GateTarget(transport=session.fleet[n], project=project.inventory.node(n).project,
                             fresh_since=clocks.get(n)) for n in names}
    try:
        keys = await read_for_gate(SecretSource.from_project(project), probe_keys(services))
    except SwarmError as exc:  # Vault sealed: gate on what needs no key
        bus.emit("rollback", "info", message=f"probes with a key skipped: {exc.message}")
        keys = {}
        services = [replace(s, probes=tuple(p for p in s.probes if not p.bearer_secret)) for s in services]
    gate = Gate(services=services, targets=targets, spec=spec, secrets=keys, bus=bus, phase=pending.phase,
                hold_cap=RESTORE_HOLD, what="restore", interrupts=interrupts, unwinding=True,
                network=network or ProbeNetwork.for_inventory(project.inventory))
    try:
        await gate.run()
    except SwarmError as exc:
        raise RollbackFailed(f"rolled back, but the previous release is not healthy: {exc.message}",
                             hint="fix the node by hand (or redeploy it), then `swarm rollback --forget` "
                                  "drops the unfinished rollback; `swarm rollback --phase N --to RELEASE` "
                                  "picks a release") from None


def forget_pending(project: Project) -> Pending | None:
    """Drop the record of an unfinished unwind (the operator fixed or rebuilt those nodes);
    returns what was dropped. Refuses while the run that wrote it is alive."""
    store = PendingStore(local_state_dir(), project.inventory.fleet)
    pending = store.load()
    if pending is None:
        return None
    if pending.still_running():
        raise LockHeld(f"run {pending.run_id} (pid {pending.pid}) is still running phase {pending.phase}: "
                       "its record is not forgotten", hint="wait for it to finish")
    store.clear()
    return pending
