"""The runner: executes a phase's node steps with a journal, and unwinds it on any failure.

A phase runs as a transaction over its nodes:

    apply (every node at once) -> rolling swaps -> gate -> register in Consul -> switch (every node at once)

The apply step recreates or reloads what changed (engine/rollout.py); a model server that
rolls is swapped after it, one instance of a model at a time with its drain in the front door,
each swap journaled like a step.

Before each step's command goes out the runner journals it (and saves the unwind it would
need in the controller's pending record); its answer is journaled when it comes back.
Any failure — a command, the gate, Consul, a dead link — and any signal makes the runner
unwind: every node that moved runs the undo of its steps in reverse (one command, with an
audit line; a node whose link dropped is reconnected first), the services it brought
back are re-gated with a short hold (they were healthy before), Consul is put back as it
was. The error raised says what happened: `PhaseFailed` (exit 1) when every node is back
on its previous release, `Interrupted` (130/143/129) after a signal, `RollbackFailed`
(exit 3) naming each node that is not and the command that finishes the job.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Mapping, Sequence

from orchestrator.config.inventory import Inventory
from orchestrator.engine import rollout
from orchestrator.engine.consul import ConsulSync
from orchestrator.engine.gate import MAX_SLEEP, Gate, GateFailed, GateTarget, NodeUnreachable
from orchestrator.engine.journal import (
    RESTORE_HOLD,
    Journal,
    NodeLeft,
    NodeWork,
    PhaseWork,
    clock_of,
    undo_failure,
)
from orchestrator.engine.pending import Pending, PendingNode, PendingStore
from orchestrator.engine.rolling import SWAP_POLL, Rolling
from orchestrator.engine.signals import Interrupted, Interrupts, StopRequested
from orchestrator.engine.steps import NodeStep, audit_line, unwind_script
from orchestrator.errors import (
    PhaseFailed,
    RollbackFailed,
    RuntimeFailure,
    SwarmError,
    TransportError,
)
from orchestrator.events import EventBus
from orchestrator.facts.probes import ProbeNetwork
from orchestrator.render.services import Service
from orchestrator.secrets import Secret
from orchestrator.transport.base import Result, check_result
from orchestrator.transport.fleet import Fleet, as_swarm_error

RECONNECT_ATTEMPTS = 3      # with 2 s between: a node whose sshd restarts within ~4 s is still rolled back


class Runner:
    def __init__(self, fleet: Fleet, bus: EventBus, *, run_id: str, by: str, consul: ConsulSync,
                 pending: PendingStore | None, secrets: Mapping[str, Secret],
                 thermal: Mapping[str, float], interrupts: Interrupts,
                 network: ProbeNetwork | None = None, inventory: Inventory | None = None,
                 doors: Sequence[Service] = ()) -> None:
        self.fleet = fleet
        self.bus = bus
        self.run_id = run_id
        self.by = by
        self.consul = consul
        self.pending = pending
        self.secrets = secrets
        self.thermal = thermal
        self.interrupts = interrupts
        self.network = network
        # model servers swapped one at a time; inventory: to reach a front door on a node the
        # run did not select; doors: the fleet's HAProxy instances with a runtime API
        self.rolling = Rolling(fleet, bus, secrets, interrupts, network, inventory, list(doors),
                               gate=self._gate, save=self._save_pending, reachable=self._reachable)

    # ------------------------------------------------------------ a phase

    async def run_phase(self, work: PhaseWork) -> None:
        """All of the phase on every node, or none of it (see the module docstring)."""
        journal = Journal(work)
        try:
            self.interrupts.check()
            reloads = rollout.reload_pending([s for w in work.nodes for s in w.reloads])
            workers = await rollout.worker_pids(self.fleet, reloads)
            applied = await self._round(journal, {w.node.name: w.apply for w in work.nodes})
            await rollout.confirm_reloads(self.fleet, reloads, workers, self.bus, work.phase, self.interrupts,
                                          wait=min(rollout.RELOAD_WAIT, work.spec.healthy_deadline))
            await self.rolling.roll(journal)
            await self._gate(work, work_services(work), fresh=_clocks(applied))
            self.interrupts.check()
            await self.consul.register(work.phase, work.consul_services, work.releases)
            self.interrupts.check()
            await self._round(journal, {w.node.name: w.switch for w in work.nodes})
        except BaseException as exc:  # a failure, a signal, or a bug: never leave it half done
            await self._unwind(journal, exc)
            raise AssertionError("unwind always raises") from exc
        self.consul.undo_log.clear()
        if self.pending is not None:
            self.pending.clear()

    async def _round(self, journal: Journal, steps: Mapping[str, NodeStep]) -> dict[str, Result]:
        """One step on every node at once; every node finishes before a failure is raised."""

        async def one(node: str, step: NodeStep) -> Result:
            entry = journal.record(node, step)
            self._save_pending(journal)
            self.bus.emit(step.name, "start", host=node, phase=journal.work.phase,
                          message=_step_message(step, journal.work))
            result = await self.fleet[node].run(step.script, input=step.input, check=False)
            entry.result = result
            self._save_pending(journal)
            check_result(node, result)
            self.bus.emit(step.name, "changed", host=node, phase=journal.work.phase,
                          message=step.summary, release=journal.by_node()[node].release)
            return result

        names = list(steps)
        outcomes = await asyncio.gather(*(one(n, steps[n]) for n in names), return_exceptions=True)
        failures = [(n, o) for n, o in zip(names, outcomes, strict=True) if isinstance(o, BaseException)]
        if failures:
            node, exc = failures[0]
            raise exc if isinstance(exc, SwarmError) else as_swarm_error(node, exc)
        return {n: o for n, o in zip(names, outcomes, strict=True) if isinstance(o, Result)}

    async def _gate(self, work: PhaseWork, services: Sequence[Service], *, fresh: Mapping[str, float],
                    hold_cap: float | None = None, unwinding: bool = False, swap: bool = False) -> None:
        if not services:
            return
        targets = {w.node.name: GateTarget(transport=self.fleet[w.node.name], project=w.node.project,
                                            thermal_limit=self.thermal.get(w.node.name),
                                            fresh_since=fresh.get(w.node.name))
                   for w in work.nodes}
        what = "restore" if unwinding else "gate"
        self.bus.emit("gate", "start", phase=work.phase,
                      message=f"{'re-checking' if unwinding else 'waiting for'} {len(services)} service(s)")
        spec, most = work.spec, MAX_SLEEP
        if swap:  # a swap of one instance: looked at every 0.5-1 s (its requests may be held meanwhile)
            spec, most = work.spec.model_copy(update={"poll_interval": min(SWAP_POLL, spec.poll_interval)}), SWAP_POLL * 2
        gate = Gate(services=services, targets=targets, spec=spec, secrets=self.secrets,
                    bus=self.bus, phase=work.phase, hold_cap=hold_cap, what=what,
                    interrupts=self.interrupts, unwinding=unwinding, network=self.network, max_sleep=most)
        await gate.run()

    # ------------------------------------------------------------ rolling swaps (engine/rolling.py)

    # ------------------------------------------------------------ the unwind

    async def _unwind(self, journal: Journal, cause: BaseException) -> None:
        work = journal.work
        reason = describe_cause(cause)
        moved = journal.moved()
        self.bus.emit("rollback", "start", phase=work.phase,
                      message=f"{reason}; rolling back {', '.join(moved) or 'nothing (no node moved)'}")
        left: dict[str, NodeLeft] = {}
        try:
            self._save_pending(journal, reason)
            await self.rolling.unroll(journal, reason, left)
            restored = await self._undo_nodes(journal, moved, reason, left)
            await self._regate(journal, restored, left)
            self.interrupts.check(unwinding=True)
            await self.consul.undo()
        except StopRequested:
            self._report_left(journal, moved, left, stopped=True)
            raise RollbackFailed(
                f"phase {work.phase}: the rollback was stopped by a second signal; left:\n  "
                + "\n  ".join(_left_lines(journal, moved, left)),
                hint="finish it with `swarm rollback --resume`") from None
        if left:
            self._report_left(journal, moved, left, stopped=False)
            raise RollbackFailed(
                f"phase {work.phase} failed ({reason}) and could not be rolled back everywhere:\n  "
                + "\n  ".join(f"{n.node}: {n.what}" for n in left.values()),
                hint="when the node answers again, `swarm rollback --resume` finishes the rollback "
                     "(a later deploy of it does so first)") from None
        if self.pending is not None:
            self.pending.clear()
        for node in moved:
            prev = journal.by_node()[node].previous
            self.bus.emit("rollback", "rolled-back", host=node, phase=work.phase,
                          message=f"back on {prev or 'nothing (first deploy)'}",
                          failed_release=journal.by_node()[node].release)
        raise _after_unwind(work, cause, reason)

    async def _undo_nodes(self, journal: Journal, moved: Sequence[str], reason: str,
                          left: dict[str, NodeLeft]) -> dict[str, float | None]:
        """Run each moved node's undo; returns node -> its clock when its services came back."""
        results = await asyncio.gather(*(self._undo_node(journal, n, reason) for n in moved),
                                       return_exceptions=True)
        restored: dict[str, float | None] = {}
        for node, outcome in zip(moved, results, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, StopRequested):
                    raise outcome
                left[node] = NodeLeft(node, undo_failure(outcome))
            elif outcome is not None:
                restored[node] = outcome
        return restored

    async def _undo_node(self, journal: Journal, node: str, reason: str) -> float | None:
        """The node's undo; returns its clock when services came back (None: none were touched)."""
        self.interrupts.check(unwinding=True)
        work = journal.by_node()[node]
        undo = journal.undo(node)
        touched = any(e.step.name == "apply" and e.step.touched(e.result) for e in journal.entries[node])
        if not await self._reachable(node):
            raise NodeUnreachable(node, str(self.fleet.unreachable.get(node, "no answer")))
        audit = audit_line(node, "rollback", journal.work.phase, self.by, release=work.previous,
                           failed=work.release, reason=reason, action_of=journal.work.action)
        script = unwind_script(work.node, undo)
        try:
            result = await self.fleet[node].run(script, input=audit, check=False)
        except TransportError:  # the link dropped under the unwind itself: once more (it is idempotent)
            self.fleet.unreachable.setdefault(node, TransportError(node, "connection lost during the unwind"))
            if not await self._reachable(node):
                raise
            result = await self.fleet[node].run(script, input=audit, check=False)
        check_result(node, result)
        journal.entries[node] = []  # undone: nothing of it is left to take back
        if touched:
            journal.undone.add(node)
        self._save_pending(journal, reason)
        if not touched:
            self.bus.emit("rollback", "changed", host=node, phase=journal.work.phase,
                          message=f"removed the upload of {work.release}; nothing had started")
            return None
        self.bus.emit("rollback", "changed", host=node, phase=journal.work.phase,
                      message=f"restored {work.previous or 'empty'}: {', '.join(work.restore.back) or '-'}"
                              + (f"; removed {', '.join(work.restore.removed)}" if work.restore.removed else ""))
        return clock_of(result) or 0.0

    async def _reachable(self, node: str) -> bool:
        transport = self.fleet[node]
        if node not in self.fleet.unreachable and getattr(transport, "is_connected", True):
            return True
        self.bus.emit("connect", "waiting", host=node, message="reconnecting to roll back")
        return await self.fleet.reconnect(node, attempts=RECONNECT_ATTEMPTS)

    async def _regate(self, journal: Journal, restored: Mapping[str, float | None],
                      left: dict[str, NodeLeft]) -> None:
        """The services the undo brought back must come up and stay up (a short hold)."""
        by_node = journal.by_node()
        back = [s for node in restored for s in by_node[node].gated if s.name in by_node[node].restore.back]
        if not back:
            return
        fresh = {n: c for n, c in restored.items() if c is not None}
        try:
            await self._gate(journal.work, back, fresh=fresh, hold_cap=RESTORE_HOLD, unwinding=True)
        except (GateFailed, NodeUnreachable) as exc:
            node = getattr(exc, "node", back[0].node)
            left[node] = NodeLeft(node, f"rolled back, but the previous release is not healthy: {exc.message}")
            return
        journal.undone.clear()

    # ------------------------------------------------------------ pending record

    def _save_pending(self, journal: Journal, reason: str = "") -> None:
        if self.pending is None:
            return
        nodes = {}
        for node, entries in journal.entries.items():
            work = journal.by_node()[node]
            if entries:
                nodes[node] = PendingNode(node=node, undo=[list(c.argv) for c in journal.undo(node)],
                                          restore=list(work.restore.back), failed_release=work.release,
                                          previous=work.previous)
            elif node in journal.undone:
                nodes[node] = PendingNode(node=node, restore=list(work.restore.back),
                                          failed_release=work.release, previous=work.previous, undone=True)
        if not nodes and not self.consul.undo_log:
            self.pending.clear()
            return
        self.pending.save(Pending(run_id=self.run_id, by=self.by, action=journal.work.action,
                                  phase=journal.work.phase, reason=reason, nodes=nodes,
                                  consul=self.consul.undo_records(), pid=os.getpid(),
                                  host=socket.gethostname()))

    def _report_left(self, journal: Journal, moved: Sequence[str], left: Mapping[str, NodeLeft],
                     *, stopped: bool) -> None:
        for line in _left_lines(journal, moved, left):
            self.bus.emit("rollback", "failed", phase=journal.work.phase, message=line)


def work_services(work: PhaseWork) -> list[Service]:
    return [s for w in work.nodes for s in w.gated]


def _clocks(results: Mapping[str, Result]) -> dict[str, float]:
    out = {}
    for node, result in results.items():
        clock = clock_of(result)
        if clock is not None:
            out[node] = clock
    return out


def _left_lines(journal: Journal, moved: Sequence[str], left: Mapping[str, NodeLeft]) -> list[str]:
    lines = []
    for node in moved:
        work = journal.by_node()[node]
        if node in left:
            lines.append(f"{node}: {left[node].what}")
        elif journal.entries.get(node):
            steps = ", ".join(e.step.name for e in journal.entries[node])
            lines.append(f"{node}: not rolled back yet (did: {steps}; release {work.release} may run, "
                         f"previous {work.previous or 'none'}; lock held)")
        elif node in journal.undone:
            lines.append(f"{node}: back on {work.previous or 'nothing'}, but the services it restored "
                         f"({', '.join(work.restore.back) or '-'}) were not re-checked")
    return lines


def describe_cause(cause: BaseException) -> str:
    if isinstance(cause, StopRequested):
        return f"interrupted by {signal.Signals(cause.signum).name}"
    if isinstance(cause, SwarmError):
        return cause.message
    if isinstance(cause, asyncio.CancelledError | KeyboardInterrupt):
        return "interrupted"
    return f"{type(cause).__name__}: {cause}"


def _after_unwind(work: PhaseWork, cause: BaseException, reason: str) -> SwarmError:
    """The error a complete unwind ends with."""
    if isinstance(cause, StopRequested):
        return Interrupted(cause.signum, f"phase {work.phase} ({work.name}) was interrupted and rolled back")
    hint = cause.hint if isinstance(cause, SwarmError) else None
    if "No space left on device" in reason:
        node = getattr(cause, "host", "the node")
        hint = f"free space under the deploy root on {node} (old releases, images), then deploy again"
    if not isinstance(cause, SwarmError | asyncio.CancelledError | KeyboardInterrupt):
        hint = "this is a bug in swarm: run with -v and report it"
    return PhaseFailed(f"phase {work.phase} ({work.name}) failed and was rolled back: {reason}", hint=hint)


def _step_message(step: NodeStep, work: PhaseWork) -> str:
    release = next(w.release for w in work.nodes if w.node.name == step.node)
    return f"release {release}" if step.name == "apply" else step.summary


__all__ = ["NodeWork", "PhaseWork", "Runner", "RESTORE_HOLD", "RuntimeFailure"]
