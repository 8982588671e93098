"""Staging: every node holds, checked, the weights the plan places on it — before anything starts.

For each pinned revision a node needs and lacks, the sources are tried in order:

  1. a node of the fleet that holds it (checked): node to node, directly or through the
     controller (transfer.py) — the hub sends nothing;
  2. the controller's mirror (mirror.py);
  3. the hub, through huggingface_hub (into the mirror first, its sha256s checked).

Copies of one revision fan out: once a node has it, the next nodes copy from it (and from each
other), so the hub or the mirror is read at most once per revision. Revisions a node already
holds are hashed where `verify` asks (a deploy: the services about to start); a corrupt or
missing file is named — repaired by `swarm models stage`, refused by a deploy. A moving revision
(`main`) arrives here resolved to a commit (models/resolve.py); one the hub could not resolve,
or a revision that does not fit on a node's disk with the inventory's margin, is refused before
any byte moves.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.clients.hub import HubClient
from orchestrator.commands.models import TMP_SUFFIX
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project
from orchestrator.errors import RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.models.disk import remember
from orchestrator.models.mirror import Mirror
from orchestrator.models.snapshot import Snapshot, human
from orchestrator.models.store import FileProblem, Held, NodeStore, check_files, read_store
from orchestrator.models.transfer import (
    Endpoint,
    Report,
    copy_direct,
    copy_relay,
    install,
    push_local,
    with_progress,
)
from orchestrator.render.services import Service
from orchestrator.render.weights import WeightsPin
from orchestrator.secrets import Secret
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.ssh import known_hosts_pattern, known_keys, target_for

GB = 1e9


@dataclass
class Needs:
    """Which revisions each node must hold, and for which services (for the messages)."""

    by_node: dict[str, dict[WeightsPin, list[str]]] = field(default_factory=dict)
    verify: set[tuple[str, WeightsPin]] = field(default_factory=set)
    unpinned: dict[WeightsPin, list[str]] = field(default_factory=dict)   # moving, no commit found for it

    def add(self, svc: Service, *, check: bool) -> None:
        if svc.weights is None:
            return
        if not svc.weights.pinned:
            self.unpinned.setdefault(svc.weights, []).append(f"{svc.node}:{svc.name}")
            return
        self.by_node.setdefault(svc.node, {}).setdefault(svc.weights, []).append(svc.name)
        if check:
            self.verify.add((svc.node, svc.weights))

    @property
    def pins(self) -> list[WeightsPin]:
        return sorted({p for pins in self.by_node.values() for p in pins})

    def __bool__(self) -> bool:
        return bool(self.by_node)


def needs_of(services: Iterable[Service], check: Iterable[str] = ()) -> Needs:
    """The weights of `services`; those named in `check` are hashed even when already staged."""
    wanted = set(check)
    needs = Needs()
    for svc in services:
        needs.add(svc, check=svc.name in wanted)
    return needs


@dataclass
class Outcome:
    """What staging did: the manifest per revision, bytes per source, and what stays wrong."""

    snapshots: dict[WeightsPin, Snapshot] = field(default_factory=dict)
    copied: list[tuple[str, WeightsPin, str, int, float]] = field(default_factory=list)  # node, pin, source, bytes, s
    problems: list[str] = field(default_factory=list)

    def bytes_from(self, kind: str) -> int:
        return sum(c[3] for c in self.copied if c[2].startswith(kind))


class Stager:
    """One staging run over a connected fleet (see the module docstring)."""

    def __init__(self, project: Project, fleet: Fleet, bus: EventBus, *, token: Secret | None = None,
                 repair: bool = True, stores: Mapping[str, NodeStore] | None = None) -> None:
        self.project = project
        self.fleet = fleet
        self.bus = bus
        self.settings = project.inventory.spec.models
        self.mirror = Mirror(Path(self.settings.mirror).expanduser())
        self.hub = HubClient(str(self.settings.hub), token)
        self.repair = repair
        self.stores: dict[str, NodeStore] = dict(stores or {})
        self.outcome = Outcome()

    # --- the run --------------------------------------------------------------------------

    async def run(self, needs: Needs) -> Outcome:
        for pin, where in sorted(needs.unpinned.items()):
            message = (f"{pin.key} ({', '.join(where)}): no commit to stage — the hub did not say which commit "
                       f"{pin.revision} names and no node serves one")
            self.bus.emit("models", "failed", message=message)
            self.outcome.problems.append(message)
        if not needs:
            return self.outcome
        await self._read_stores(needs.by_node)
        if any(not self._holds(n, p) for n, pins in needs.by_node.items() for p in pins):
            await self._read_stores(self.fleet.reachable)   # any node may hold what another lacks
        bad = await self._verify(needs)
        try:
            for pin in needs.pins:
                await self._stage(pin, needs, bad)
        finally:
            remember(self.project, self.stores, {p: s.total_bytes for p, s in self.outcome.snapshots.items()},
                     "staging")
        return self.outcome

    async def _read_stores(self, nodes: Iterable[str]) -> None:
        missing = [h for h in nodes if h in self.fleet.reachable and h not in self.stores]
        answers = await self.fleet.map(lambda t: read_store(t, self._node(t.host).deploy_root), missing)
        for host, answer in answers.items():
            if isinstance(answer, NodeStore):
                self.stores[host] = answer
            else:
                self.bus.emit("models", "info", host=host, message=f"could not read its model store: {answer}")

    async def _verify(self, needs: Needs) -> set[tuple[str, WeightsPin]]:
        """Hash what is already staged where asked; every bad copy is named (and repaired or refused)."""
        todo = [(n, p) for n, p in sorted(needs.verify) if n in self.stores and self.stores[n].has(p)]
        results = await asyncio.gather(*(self._check(n, p) for n, p in todo))
        bad: set[tuple[str, WeightsPin]] = set()
        for (node, pin), problems in zip(todo, results, strict=True):
            if not problems:
                continue
            bad.add((node, pin))
            services = ", ".join(needs.by_node[node][pin])
            named = "; ".join(str(p) for p in problems)
            message = f"{node}: weights {pin.short} of {services}: {named}"
            self.bus.emit("models", "failed" if not self.repair else "info", host=node, message=message)
            if not self.repair:
                self.outcome.problems.append(message)
        return bad

    async def _check(self, node: str, pin: WeightsPin) -> list[FileProblem]:
        held = self.stores[node].held[pin]
        assert held.snapshot is not None
        self.outcome.snapshots.setdefault(pin, held.snapshot)
        started = time.monotonic()
        problems = await check_files(self.fleet[node], held.path, held.snapshot)
        self.bus.emit("models", "ok" if not problems else "failed", host=node,
                      message=f"{pin.short}: {len(held.snapshot.files)} file(s), "
                              f"{human(held.snapshot.total_bytes)} hashed in {time.monotonic() - started:.1f}s")
        return problems

    # --- one revision ----------------------------------------------------------------------

    async def _stage(self, pin: WeightsPin, needs: Needs, bad: set[tuple[str, WeightsPin]]) -> None:
        targets = [n for n, pins in needs.by_node.items() if pin in pins
                   and (not self._holds(n, pin) or ((n, pin) in bad and self.repair))]
        holders = [n for n in self.fleet.reachable if self._holds(n, pin) and (n, pin) not in bad]
        snap = self._known_snapshot(pin, holders)
        if not targets:
            return
        if snap is not None:
            self._check_room(pin, snap, targets, needs)
        while targets:
            if holders:
                done = await self._copy_round(pin, snap, targets, holders)
            else:
                snap, done = await self._from_controller(pin, targets[0], needs)
            if not done:
                return
            holders.extend(done)
            targets = [t for t in targets if t not in done]

    def _holds(self, node: str, pin: WeightsPin) -> bool:
        store = self.stores.get(node)
        return store is not None and store.has(pin)

    def _known_snapshot(self, pin: WeightsPin, holders: list[str]) -> Snapshot | None:
        for node in holders:
            snap = self.stores[node].held[pin].snapshot
            if snap is not None:
                self.outcome.snapshots.setdefault(pin, snap)
                return snap
        snap = self.outcome.snapshots.get(pin) or self.mirror.snapshot(pin)
        if snap is not None:
            self.outcome.snapshots.setdefault(pin, snap)
        return snap

    def _check_room(self, pin: WeightsPin, snap: Snapshot, targets: list[str], needs: Needs) -> None:
        margin = self.settings.disk_margin_gb * GB
        for node in targets:
            free = self.stores[node].free_bytes if node in self.stores else None
            if free is not None and snap.total_bytes + margin > free:
                raise RuntimeFailure(
                    f"{node}: {pin.short} ({', '.join(needs.by_node[node][pin])}) needs "
                    f"{human(snap.total_bytes)} + the {self.settings.disk_margin_gb:g} GB margin, the model "
                    f"store has {human(free)} free; nothing was copied",
                    hint=f"free space on {node} (`swarm models gc --limit {node}`), or place the model elsewhere")

    async def _copy_round(self, pin: WeightsPin, snap: Snapshot | None, targets: list[str],
                          holders: list[str]) -> list[str]:
        """Every target copies from a holder at once (round robin over the holders)."""
        assert snap is not None
        pairs = [(t, holders[i % len(holders)]) for i, t in enumerate(targets)]
        results = await asyncio.gather(*(self._from_peer(pin, snap, t, s) for t, s in pairs),
                                       return_exceptions=True)
        done = []
        for (target, source), result in zip(pairs, results, strict=True):
            if result is True:
                done.append(target)
            else:
                why = result if isinstance(result, BaseException) else "its copy did not check out"
                self.bus.emit("models", "info", host=target, message=f"{pin.short} from {source} failed: {why}")
        if not done:  # no peer could give it: the controller's mirror or the hub, for one node
            return (await self._from_controller(pin, targets[0], None))[1]
        return done

    async def _from_peer(self, pin: WeightsPin, snap: Snapshot, target: str, source: str) -> bool:
        src, dst = self._endpoint(source), self._endpoint(target)
        src_dir = self.stores[source].held[pin].path
        final = pin.store_dir(dst.node.deploy_root)
        tmp = final + TMP_SUFFIX
        started = time.monotonic()
        ways = ["direct", "relay"] if self.settings.direct else ["relay"]
        for way in ways:
            self.bus.emit("models", "start", host=target,
                          message=f"{pin.short}: {human(snap.total_bytes)} from {source} ({way})")
            try:
                if way == "direct":
                    work = copy_direct(src, dst, snap, src_dir, tmp, self._host_key_line(target),
                                       f"swarm-stage-{secrets.token_hex(6)}")
                else:
                    work = copy_relay(src, dst, snap, src_dir, tmp)
                await with_progress(dst, tmp, self._reporter(target, pin, snap, source, started), work)
            except SwarmError as exc:
                self.bus.emit("models", "info", host=target, message=f"{pin.short}: {way} copy failed: {exc}")
                continue
            return await self._install(dst, pin, snap, tmp, final, f"{source} ({way})", started)
        return False

    async def _from_controller(self, pin: WeightsPin, target: str, needs: Needs | None
                               ) -> tuple[Snapshot | None, list[str]]:
        source = "mirror"
        snap = self.mirror.snapshot(pin)
        if snap is None or self.mirror.problems(snap):
            source = "hub"
            self.bus.emit("models", "start", host=target, message=f"{pin.short}: fetching from the hub {self.hub.endpoint}")

            def say(message: str) -> None:
                self.bus.emit("models", "progress", host=target, message=message)

            snap = await asyncio.to_thread(self.mirror.fetch, self.hub, pin, say)
        self.outcome.snapshots[pin] = snap
        if needs is not None:
            self._check_room(pin, snap, [target], needs)
        dst = self._endpoint(target)
        final = pin.store_dir(dst.node.deploy_root)
        tmp = final + TMP_SUFFIX
        started = time.monotonic()
        self.bus.emit("models", "start", host=target,
                      message=f"{pin.short}: {human(snap.total_bytes)} from the controller's mirror")
        work = push_local(dst, self.mirror.path(pin), snap, tmp)
        await with_progress(dst, tmp, self._reporter(target, pin, snap, "the controller", started), work)
        ok = await self._install(dst, pin, snap, tmp, final, source, started)
        return snap, [target] if ok else []

    async def _install(self, dst: Endpoint, pin: WeightsPin, snap: Snapshot, tmp: str, final: str,
                       source: str, started: float) -> bool:
        problems = await install(dst, snap, tmp, final)
        seconds = time.monotonic() - started
        if problems:
            message = f"{dst.name}: {pin.short} from {source}: " + "; ".join(map(str, problems))
            self.bus.emit("models", "failed", host=dst.name, message=message)
            self.outcome.problems.append(message)
            return False
        self.outcome.copied.append((dst.name, pin, source, snap.total_bytes, seconds))
        store = self.stores.get(dst.name) or NodeStore(dst.name, dst.node.deploy_root)
        free = None if store.free_bytes is None else store.free_bytes - snap.total_bytes
        self.stores[dst.name] = replace(store, held={**store.held, pin: Held(pin, final, snap)}, free_bytes=free)
        rate = snap.total_bytes / seconds / 1e6 if seconds > 0 else 0.0
        self.bus.emit("models", "ok", host=dst.name,
                      message=f"{pin.short}: {human(snap.total_bytes)} from {source} in {seconds:.1f}s "
                              f"({rate:.0f} MB/s), every sha256 checked")
        return True

    def _reporter(self, target: str, pin: WeightsPin, snap: Snapshot, source: str, started: float
                  ) -> Report:
        def report(done: int) -> None:
            seconds = max(time.monotonic() - started, 1e-3)
            self.bus.emit("models", "progress", host=target,
                          message=f"{pin.short}: {human(done)} of {human(snap.total_bytes)} from {source} "
                                  f"({done / seconds / 1e6:.0f} MB/s)", done=done, total=snap.total_bytes)
        return report

    # --- plumbing ---------------------------------------------------------------------------

    def _node(self, name: str) -> Node:
        return self.project.inventory.node(name)

    def _endpoint(self, name: str) -> Endpoint:
        return Endpoint(self._node(name), self.fleet[name])

    def _host_key_line(self, name: str) -> str:
        """The destination's host key as the controller knows it, for the source's ssh."""
        node = self._node(name)
        target = target_for(self.project.inventory, node)
        keys = known_keys(target.known_hosts, target.address, target.port) if target.known_hosts else []
        if not keys:
            raise RuntimeFailure(f"{name}: no host key in {target.known_hosts} for a direct copy")
        pattern = known_hosts_pattern(target.address, target.port)
        return "".join(f"{pattern} {k.export_public_key('openssh').decode().split()[0]} "
                       f"{k.export_public_key('openssh').decode().split()[1]}\n" for k in keys)


def require_staged(outcome: Outcome, what: str) -> None:
    """Stop (nothing changed yet) when staging left a node without checked weights."""
    if outcome.problems:
        raise RuntimeFailure(f"{what}: {len(outcome.problems)} weights problem(s), nothing was changed:\n  "
                             + "\n  ".join(outcome.problems),
                             hint="`swarm models stage` copies them again from a good source (docs/models.md)")
