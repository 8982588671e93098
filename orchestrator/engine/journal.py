"""A phase's work as data, and the journal the runner keeps of it.

`PhaseWork` holds per node its `NodeWork` (the apply and switch steps, the undo's restore, the
services to gate, the model servers rolled after the apply); the runner records each step in
the `Journal` before its command goes out, and its answer when it comes back — the unwind runs
the journal's undo in reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.commands import Command
from orchestrator.config.inventory import Node
from orchestrator.config.playbook import GateSpec
from orchestrator.engine.gate import NodeUnreachable
from orchestrator.engine.rollout import Move, Swapper
from orchestrator.engine.steps import NodeStep, Restore
from orchestrator.errors import SwarmError
from orchestrator.render.services import Service
from orchestrator.transport.base import Result

RESTORE_HOLD = 3.0       # a restored service that was healthy before: seconds it must stay up


@dataclass
class NodeWork:
    """One node's part of a phase."""

    node: Node
    release: str
    previous: str | None
    apply: NodeStep
    switch: NodeStep
    restore: Restore
    gated: tuple[Service, ...]            # the phase's services on the node, gated after apply
    rolling: tuple[Service, ...] = ()     # swapped one at a time after the apply (engine/rollout.py)
    reloads: tuple[Service, ...] = ()     # reloaded in place by the apply; confirmed after it


@dataclass
class PhaseWork:
    phase: int
    name: str
    action: str                           # deploy | rollback
    spec: GateSpec
    nodes: list[NodeWork]
    consul_services: list[Service] = field(default_factory=list)

    @property
    def releases(self) -> dict[str, str]:
        return {w.node.name: w.release for w in self.nodes}


@dataclass
class Entry:
    step: NodeStep
    result: Result | None = None


@dataclass
class Journal:
    """Per node, the steps this phase ran (or sent), in order."""

    work: PhaseWork
    entries: dict[str, list[Entry]] = field(default_factory=dict)
    undone: set[str] = field(default_factory=set)   # undo ran, restored services not re-checked yet
    moves: list[Move] = field(default_factory=list)  # rolling instances and how far each got
    swapper: Swapper | None = None

    def record(self, node: str, step: NodeStep) -> Entry:
        entry = Entry(step)
        self.entries.setdefault(node, []).append(entry)
        return entry

    def moved(self) -> list[str]:
        return [n for n, entries in self.entries.items() if entries]

    def undo(self, node: str) -> list[Command]:
        out: list[Command] = []
        for entry in reversed(self.entries.get(node, [])):
            out.extend(entry.step.undo_for(entry.result))
        return out

    def by_node(self) -> dict[str, NodeWork]:
        return {w.node.name: w for w in self.work.nodes}


@dataclass
class NodeLeft:
    """What an unwind could not finish on a node."""

    node: str
    what: str


def clock_of(result: Result) -> float | None:
    """The node's clock as the step printed it (`commands.node_clock`)."""
    for step in result.steps:
        if step.command.argv == ("date", "+%s") and step.ok:
            try:
                return float(step.stdout.strip()) - 1.0  # created in the same second counts
            except ValueError:
                return None
    return None


def undo_failure(exc: BaseException) -> str:
    if isinstance(exc, NodeUnreachable):
        return f"unreachable, not rolled back ({exc.message}); its lock is still held"
    if isinstance(exc, SwarmError):
        return f"rollback failed: {exc.message}"
    return f"rollback failed: {type(exc).__name__}: {exc}"
