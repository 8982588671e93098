"""The rolling swaps of a phase: model servers put in place one instance at a time.

The runner calls `Rolling.roll` after the phase's apply step and `Rolling.unroll` first in an
unwind; what a swap is (drain in the front door, compose up, gate, a completion, ready) is
rollout.py's. Each swap is journaled like a step, so a cut-off run's pending record knows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.config.inventory import Inventory
from orchestrator.engine import rollout
from orchestrator.engine.gate import NodeUnreachable
from orchestrator.engine.journal import RESTORE_HOLD, Journal, NodeLeft, clock_of, undo_failure
from orchestrator.engine.signals import Interrupts, StopRequested
from orchestrator.errors import RuntimeFailure
from orchestrator.events import EventBus
from orchestrator.facts.probes import ProbeNetwork
from orchestrator.render.services import Service
from orchestrator.secrets import Secret
from orchestrator.transport.base import check_result
from orchestrator.transport.fleet import Fleet

ROLL_HOLD = 2.0          # a swapped instance: seconds it must stay up before it takes requests again
SWAP_POLL = 0.5          # ... looked at every 0.5-1 s: a model with one instance has its requests held meanwhile


@dataclass
class Rolling:
    """The runner's rolling swaps, over its fleet, gate and pending record."""

    fleet: Fleet
    bus: EventBus
    secrets: Mapping[str, Secret]
    interrupts: Interrupts
    network: ProbeNetwork | None
    inventory: Inventory | None
    doors: Sequence[Service]
    gate: Callable[..., Awaitable[None]]                 # Runner._gate
    save: Callable[..., None]                            # Runner._save_pending
    reachable: Callable[[str], Awaitable[bool]]          # Runner._reachable

    async def roll(self, journal: Journal) -> None:
        """Each rolling instance, one at a time per model, models in parallel."""
        work = journal.work
        journal.moves = [rollout.Move(svc=s, node=w.node, release=w.release, previous=w.previous or "")
                         for w in work.nodes for s in w.rolling]
        if not journal.moves:
            return
        if self.inventory is None:
            raise RuntimeFailure("a rolling rollout needs the inventory to reach the front door")
        doors = await rollout.open_doors(self.fleet, self.inventory, self.doors)
        journal.swapper = rollout.Swapper(self.fleet, self.bus, doors, self.secrets, self.interrupts,
                                          work.phase, self.network)
        groups = rollout.groups_of(journal.moves)
        self.bus.emit("rollout", "start", phase=work.phase,
                      message="rolling, one instance of a model at a time: "
                              + "; ".join(f"{b}: {', '.join(m.svc.name for m in ms)}" for b, ms in groups.items()))
        await rollout.run_groups(groups, lambda m: self._roll_one(journal, m))

    async def _roll_one(self, journal: Journal, move: rollout.Move) -> None:
        swapper, node, svc = journal.swapper, move.node.name, move.svc
        assert swapper is not None
        self.interrupts.check()
        self.bus.emit("rollout", "start", host=node, phase=journal.work.phase, service=svc.name,
                      message=f"{svc.name}: draining it in the front door ({move.backend})")
        await swapper.drain(move)
        self.interrupts.check()
        step = rollout.swap_step(move.node, svc, release=move.release, previous=move.previous)
        move.entry = journal.record(node, step)
        move.stage = "swapped"
        self.save(journal)
        result = await self.fleet[node].run(step.script, check=False)
        move.entry.result = result
        self.save(journal)
        check_result(node, result)
        # back into the front door once it answers (probes, a short hold, a real completion):
        # a model with one instance has its requests held meanwhile; the phase's gate then holds
        # it for the whole min_healthy_time with the rest, and a failure there unwinds it too
        await self.gate(journal.work, [svc], fresh={node: clock_of(result) or 0.0}, hold_cap=ROLL_HOLD, swap=True)
        await swapper.completion(svc)
        await swapper.ready(move)
        self.bus.emit("rollout", "changed", host=node, phase=journal.work.phase, service=svc.name,
                      message=f"{svc.name}: on release {move.release}, back in the front door")

    async def unroll(self, journal: Journal, reason: str, left: dict[str, NodeLeft]) -> None:
        """Every rolling instance that moved back, with the same drain; per model in reverse."""
        moved = [m for m in journal.moves if m.moved]
        if not moved:
            return
        groups = rollout.groups_of(moved)

        async def group(moves: list[rollout.Move]) -> None:
            for move in sorted(moves, key=lambda m: m.svc.name, reverse=True):
                try:
                    await self._unroll_one(journal, move, reason)
                except StopRequested:
                    raise
                except BaseException as exc:  # noqa: BLE001 - named in what is left, the rest goes on
                    left[move.node.name] = NodeLeft(move.node.name, f"{move.svc.name}: {undo_failure(exc)}")

        outcomes = await asyncio.gather(*(group(ms) for ms in groups.values()), return_exceptions=True)
        stop = next((o for o in outcomes if isinstance(o, StopRequested)), None)
        if stop is not None:
            raise stop

    async def _unroll_one(self, journal: Journal, move: rollout.Move, reason: str) -> None:
        swapper, node, svc = journal.swapper, move.node.name, move.svc
        assert swapper is not None
        self.interrupts.check(unwinding=True)
        if move.stage == "drained":  # still its old container: only back into the front door
            await swapper.ready(move)
            move.stage = "waiting"
            self.bus.emit("rollback", "changed", host=node, phase=journal.work.phase,
                          message=f"{svc.name}: not swapped; back in the front door")
            return
        if not await self.reachable(node):
            raise NodeUnreachable(node, str(self.fleet.unreachable.get(node, "no answer")))
        await swapper.drain(move, unwinding=True)
        result = await self.fleet[node].run(rollout.restore_script(move.node, svc, move.previous), check=False)
        check_result(node, result)
        await self.gate(journal.work, [svc], fresh={node: clock_of(result) or 0.0}, hold_cap=RESTORE_HOLD,
                         unwinding=True, swap=True)
        await swapper.completion(svc)
        await swapper.ready(move)
        move.stage = "waiting"
        journal.entries[node] = [e for e in journal.entries.get(node, []) if e is not move.entry]
        self.save(journal, reason)
        self.bus.emit("rollback", "changed", host=node, phase=journal.work.phase,
                      message=f"{svc.name}: back on {move.previous}, drained first, checked, in the front door")
