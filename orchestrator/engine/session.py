"""The one way a run reaches its nodes: connect, lock then look, unlock on every path.

A `Session` is one run's connections (a `Fleet`) and who the run is (`RunContext`, written
into every lock it takes). Deploy, rollback, a resumed unwind, the no-op check, backup,
restore and unlock all go through one:

* **connect**: every node at once. A node marked optional (`optional: true`, or only in
  optional phases) has a short connect window (`ssh.optional_window`): one that does not
  answer in time is off — skipped and reported, never fatal for the others, and nobody
  waits for it longer than that. A required node that cannot be reached stops the run
  before anything changed, unless the command answers per node (status, releases, backup).
* **lock, then look**: ONE command per node. Its first step takes the node's deploy lock
  (only where something differs from what the run wants, unless the lock is forced), the
  next ones read what the node runs (`facts.node`), and the last ones run only where this
  run took the lock (the preflight facts, a backup's listing). A node that is still
  connecting is looked at as soon as it answers: the nodes do not wait for each other.
* **unlock**: every lock the run still holds is released when the session ends — after
  success, a failure, a signal — in one command per node, with an audit line where the
  caller gives one. A step that releases the lock itself (a deploy's last switch on a node)
  says so with `released(node)`.

Nothing else in swarm builds a lock command (commands/lock.py has the argv).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from orchestrator import commands as cmd
from orchestrator.commands import Command, Script, StepResult
from orchestrator.engine.context import RunContext
from orchestrator.errors import LockHeld, RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import (
    LockState,
    LookRequest,
    NodeState,
    describe_holder,
    holder_record,
    is_stale,
    look_commands,
    parse_look,
)
from orchestrator.transport.base import Result
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.ssh import DEFAULT_FORKS, SshTarget

LOOK_TIMEOUT_S = 120.0
LockMode = Literal["auto", "force", "none"]


@dataclass(frozen=True)
class Look:
    """What one node is asked in the run's first command.

    `lock`: "auto" takes the lock only where the node does not already run what
    `request.expected` says; "force" always (a rollback, a restore); "none" never
    (`--check`: who holds it is read, nothing changes). `then` runs only where this run
    took the lock. A command that needs nothing of the node's releases (a backup) looks
    only at what its `then` lists: `request.reads` is False."""

    request: LookRequest
    lock: LockMode = "auto"
    then: tuple[Command, ...] = ()


@dataclass
class Session:
    fleet: Fleet
    ctx: RunContext
    bus: EventBus
    roots: dict[str, str]                               # node -> deploy_root
    optional: frozenset[str] = frozenset()
    locked: set[str] = field(default_factory=set)
    states: dict[str, NodeState] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)   # optional node -> why it was left out
    extra: dict[str, tuple[StepResult, ...]] = field(default_factory=dict)  # node -> its `then` answers
    _connecting: dict[str, asyncio.Task[None]] = field(default_factory=dict, repr=False)

    @classmethod
    def over_ssh(cls, targets: Iterable[SshTarget], ctx: RunContext, bus: EventBus, *,
                 roots: Mapping[str, str], forks: int = DEFAULT_FORKS, check: bool = False,
                 where: str | None = None) -> Session:
        """A session over real SSH (`check`: only read-only commands go out; `where`: the
        inventory, named by a missing key or known_hosts file's error)."""
        chosen = list(targets)
        optional = frozenset(t.name for t in chosen if t.answer_window is not None)
        return cls(Fleet.over_ssh(chosen, forks=forks, check=check, where=where), ctx, bus, dict(roots), optional)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release every lock still held, then close every connection (on every path)."""
        for task in self._connecting.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._connecting.values(), return_exceptions=True)
        try:
            await self.unlock_all()
        finally:
            await self.fleet.close()

    # ------------------------------------------------------------ connect

    def start(self, hosts: Iterable[str] | None = None) -> None:
        """Begin connecting (every node at once); `look` and `connect` wait for what they need."""
        for host in self.fleet.hosts if hosts is None else hosts:
            if host not in self._connecting:
                self._connecting[host] = asyncio.ensure_future(self._connect_one(host))

    async def _connect_one(self, host: str) -> None:
        await self.fleet.connect([host])
        error = self.fleet.unreachable.get(host)
        if error is None:
            self.bus.emit("connect", "ok", host=host)
        elif host in self.optional:
            self.skipped[host] = error.message
            self.bus.emit("connect", "skipped", host=host, message=f"optional node skipped: {error.message}")
        else:
            self.bus.emit("connect", "failed", host=host, message=error.message)

    async def answered(self, hosts: Iterable[str], *, unless: asyncio.Future[Any]) -> None:
        """Until every one of `hosts` has answered or been given up on, or `unless` is done first
        (no connect is cancelled by the wait)."""
        chosen = list(hosts)
        self.start(chosen)
        waiting: set[asyncio.Future[Any]] = {self._connecting[h] for h in chosen}
        while waiting and not unless.done():
            _, pending = await asyncio.wait(waiting | {unless}, return_when=asyncio.FIRST_COMPLETED)
            waiting = pending - {unless}

    async def reached(self, host: str) -> bool:
        """Whether the node answered (waiting for its connect, if under way)."""
        self.start([host])
        await self._connecting[host]
        return host not in self.fleet.unreachable

    async def connect(self, hosts: Iterable[str] | None = None, *, required: bool = True) -> dict[str, str]:
        """Every node connected or given up on; returns the optional nodes skipped. With
        `required`, a required node that did not answer stops the run (nothing changed yet)."""
        chosen = list(self.fleet.hosts if hosts is None else hosts)
        self.start(chosen)
        await asyncio.gather(*(self._connecting[h] for h in chosen))
        if required:
            self.require_reachable(chosen)
        return {h: self.skipped[h] for h in chosen if h in self.skipped}

    def require_reachable(self, hosts: Iterable[str]) -> None:
        down = {h: self.fleet.unreachable[h] for h in hosts if h in self.fleet.unreachable and h not in self.optional}
        if down:
            node, exc = next(iter(down.items()))
            raise RuntimeFailure(f"{exc.message}; nothing was changed on any node",
                                 hint=exc.hint or f"bring {node} back, or leave it out with --limit")

    # ------------------------------------------------------------ lock, then look

    async def look(self, looks: Mapping[str, Look]) -> dict[str, NodeState]:
        """Lock, then look, on each node as soon as it answers; unreachable nodes are left out
        (`connect`/`require_reachable` say what that means). A node whose look fails raises."""
        outcome = await asyncio.gather(*(self._look_one(n, look) for n, look in looks.items()),
                                       return_exceptions=True)
        found: dict[str, NodeState] = {}
        for name, result in zip(looks, outcome, strict=True):
            if isinstance(result, BaseException):
                raise result if isinstance(result, SwarmError) else RuntimeFailure(f"{name}: {result}")
            if result is not None:
                found[name] = result
        return found

    async def _look_one(self, name: str, look: Look) -> NodeState | None:
        if not await self.reached(name):
            return None
        result = await self.fleet[name].run(self._script(look), check=False, timeout=LOOK_TIMEOUT_S)
        lock = self._lock_state(look, result.steps[0]) if result.steps else LockState(error="no answer")
        reads = len(look_commands(look.request)) if look.request.reads else 0
        state = parse_look(look.request, result.steps[1:1 + reads], name) if reads else NodeState(name)
        state = replace(state, lock=lock)
        if lock.taken:
            self.locked.add(name)
        self.states[name] = state
        self.extra[name] = tuple(result.steps[1 + reads:])
        self.bus.emit("facts", "ok", host=name,
                      message=f"current {state.current_id or 'none'}" + (" (locked)" if lock.taken else ""))
        return state

    def _script(self, look: Look) -> Script:
        request, root = look.request, look.request.deploy_root
        if look.lock == "none":
            first = cmd.lock_holder(f"{root}/.lock")
        else:
            first = cmd.look_lock(root, self.ctx.holder(), self.ctx.run_id, request.expected,
                                  request.wanted_dirs(), force=look.lock == "force")
        marker = cmd.run_marker(root, self.ctx.run_id)
        guarded = [cmd.only_if_locked(marker, c) for c in look.then]
        reads = look_commands(request) if request.reads else []
        return Script.of(first, *reads, *guarded, stop_on_error=False)

    def _lock_state(self, look: Look, step: StepResult) -> LockState:
        if look.lock == "none":
            text = cmd.parse_read_file(step.stdout) if step.ok else None
            return LockState(held_by=holder_record(text) if text is not None else None)
        first, _, rest = step.stdout.partition("\n")
        if step.ok and first.strip() == cmd.LOOK_LOCKED:
            return LockState(taken=True)
        if step.ok and first.strip() == cmd.LOOK_UNCHANGED:
            return LockState(held_by=holder_record(rest) if rest.strip() else None)
        if step.exit_status == cmd.LOCK_HELD_EXIT:
            return LockState(held_by=holder_record(step.stdout))
        detail = (step.stderr.strip() or step.stdout.strip())[:200]
        return LockState(error=detail or f"exit {step.exit_status}")

    def require_lock(self, node: str, user: str = "the SSH user") -> None:
        """This run must hold the node's lock (else exit 4 naming the holder, nothing changed)."""
        state = self.states[node]
        if state.lock.taken:
            return
        if state.lock.error:
            raise RuntimeFailure(f"{node}: cannot take the deploy lock in {self.roots[node]}/.lock: "
                                 f"{state.lock.error}", hint=f"can {user} write to {self.roots[node]}?")
        raise lock_held(node, state.lock.held_by or {})

    # ------------------------------------------------------------ unlock

    def unlock_command(self, node: str) -> Command:
        """Releases the lock if this run holds it: for a step that ends the node's part of the
        run in its own command (call `released` once it ran)."""
        return cmd.unlock_if_mine(self.roots[node], self.ctx.run_id)

    def released(self, node: str) -> None:
        self.locked.discard(node)

    async def unlock(self, node: str, *, before: Sequence[Command] = (), input: bytes | None = None) -> Result | None:
        """Release the node's lock in one command, after `before` (which may read `input`: an
        audit line, a file); None when the node cannot be reached."""
        if node in self.fleet.unreachable:
            return None
        script = Script.of(*before, self.unlock_command(node), stop_on_error=False)
        try:
            return await self.fleet[node].run(script, input=input, check=False)
        finally:
            self.locked.discard(node)

    def audit_command(self, node: str) -> Command:
        """Appends stdin (one JSON line) to the node's audit log."""
        return cmd.append_file(f"{self.roots[node]}/audit.log")

    async def unlock_all(self, last: Callable[[str], tuple[Sequence[Command], bytes | None]] | None = None) -> None:
        """Every lock still held, released; `last(node)` gives what runs before the release in
        the same command (and its input), e.g. the deploy's applied lines."""
        async def one(node: str) -> Result | None:
            before, data = last(node) if last else ((), None)
            return await self.unlock(node, before=before, input=data)

        held = [n for n in sorted(self.locked) if n not in self.fleet.unreachable]
        outcome = await asyncio.gather(*(one(n) for n in held), return_exceptions=True)
        for name, result in zip(held, outcome, strict=True):
            if isinstance(result, BaseException):
                self.bus.emit("lock", "failed", host=name, message=f"could not release the lock: {result}")
        self.locked.clear()

    async def break_lock(self, node: str, audit: Callable[[str], bytes]) -> str | None:
        """`swarm unlock`: remove whoever's lock the node holds, with `audit(holder)` in its audit
        log; the holder it had, or None when it had none."""
        lock_dir = f"{self.roots[node]}/.lock"
        text = cmd.parse_read_file((await self.fleet[node].run(cmd.lock_holder(lock_dir))).stdout)
        if text is None:
            return None
        holder = describe_holder(holder_record(text))
        await self.fleet[node].run(Script.of(cmd.lock_release(lock_dir), self.audit_command(node)),
                                   input=audit(holder))
        return holder


def lock_held(node: str, holder: dict[str, Any]) -> LockHeld:
    """Another run holds the node's lock: exit 4, naming it (and how to break it when stale)."""
    if is_stale(holder, socket.gethostname()):
        return LockHeld(f"{node}: the deploy lock is held by {describe_holder(holder)}, "
                        "whose process is gone: the lock is stale",
                        hint=f"break it with `swarm unlock --limit {node}` "
                             "(then `swarm rollback --resume` if that run was cut off mid-phase)")
    return LockHeld(f"{node}: another deploy holds the lock: {describe_holder(holder)}",
                    hint=f"wait for it to finish; if it died, break the lock with `swarm unlock --limit {node}`")


def lock_problem(state: NodeState) -> str | None:
    """Why this run does not hold the node's lock (None when it does): for per-node answers."""
    if state.lock.taken:
        return None
    if state.lock.held_by is not None:
        return (f"held by {describe_holder(state.lock.held_by)}: wait for it, or "
                "`swarm unlock --limit NODE` if it is stale")
    return f"could not be taken: {state.lock.error or 'no answer'}"
