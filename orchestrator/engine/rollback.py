"""`swarm rollback`: the same runner, applied to an older release of the same phase.

For each node of the phase, under its lock (taken first, like a deploy's):

* the target is the release of *this phase* that ran before the one in effect now (or
  `--to` a named release of this phase). A phase with no earlier release of its own is
  refused, naming it — rolling back never reaches into another phase's releases;
* a new release is built on the node: a copy of the current one whose services of this
  phase (compose definition, env file, config copy) are taken from the target; the other
  phases' services stay exactly as they run;
* then the deploy's steps: apply (compose up what differs, rm what the target did not
  have), gate, Consul, switch, audit — and the same unwind if any of it fails.

Protected services (Qdrant) are never named in a compose command: a rollback leaves them
as they run and says so.

`resume_pending` finishes an unwind that was cut off (a second signal, a dead link, a
killed process) from the controller's pending record: same lock (the run's own marker),
the recorded undo, a re-gate of what it brings back, Consul as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from orchestrator import commands as cmd
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project
from orchestrator.engine import rollout
from orchestrator.engine.consul import ConsulSync
from orchestrator.engine.context import RunContext, new_run, whoami
from orchestrator.engine.deploy import lock_held
from orchestrator.engine.gate import Gate, GateTarget, ProbeNetwork
from orchestrator.engine.pending import Pending, PendingStore
from orchestrator.engine.runner import RESTORE_HOLD, NodeWork, PhaseWork, Runner, describe_cause
from orchestrator.engine.selection import PhaseScope, Selection, select
from orchestrator.engine.signals import Interrupted, Interrupts, StopRequested
from orchestrator.engine.steps import (
    apply_step,
    audit_line,
    prune_list,
    restore_of,
    switch_step,
    unlock_script,
    unwind_script,
)
from orchestrator.errors import InputError, LockHeld, RollbackFailed, RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import LookRequest, NodeState, look_script, parse_look
from orchestrator.models.run import before_rollback
from orchestrator.paths import local_state_dir
from orchestrator.render.release import RELEASE_FILE, applied_lines
from orchestrator.render.services import Service
from orchestrator.transport.base import check_result
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.ssh import DEFAULT_FORKS


@dataclass(frozen=True)
class RollbackOptions:
    phases: tuple[int, ...] | None = None
    limit: str | None = None
    to: str | None = None
    forks: int = DEFAULT_FORKS
    by: str = field(default_factory=whoami)


@dataclass(frozen=True)
class Target:
    """Where one phase goes back to on one node."""

    release: dict[str, Any]       # the target release's record
    effective: dict[str, Any]     # the phase's release in effect now


def check_release_name(value: str | None) -> str | None:
    """`--to` names a release id: checked before anything connects."""
    if value is None:
        return None
    if not value or "/" in value or value.startswith(".") or any(c.isspace() or ord(c) < 32 for c in value):
        raise InputError(f"--to {value!r}: not a release id (see `swarm releases`)")
    return value


# --------------------------------------------------------------------------- targets


def phase_releases(state: NodeState, phase: int) -> list[dict[str, Any]]:
    return [m for m in state.manifests if m.get("phase") == phase]


def base_of(record: dict[str, Any], by_id: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The release whose content a record runs: a rollback release runs its target's."""
    seen = set()
    while record.get("rolled_back_to") in by_id and record["id"] not in seen:
        seen.add(record["id"])
        record = by_id[record["rolled_back_to"]]
    return record


def find_target(node: str, state: NodeState, phase: int, to: str | None) -> Target:
    """The phase's release before the one in effect (or `to`); refuse when there is none."""
    current = state.current_id
    mine = sorted(phase_releases(state, phase), key=lambda m: str(m["id"]))
    if current is None or not mine:
        raise InputError(f"{node}: phase {phase} has no release on this node to roll back from",
                         hint="`swarm releases` lists what each node keeps")
    by_id = {str(m["id"]): m for m in mine}
    effective = next((m for m in reversed(mine) if str(m["id"]) <= current), None)
    if effective is None:
        raise InputError(f"{node}: phase {phase} has no release in effect (current {current})")
    if to is not None:
        chosen = by_id.get(to)
        if chosen is None:
            known = ", ".join(by_id) or "none"
            raise InputError(f"{node}: no release {to!r} of phase {phase} (phase {phase} releases: {known})")
        return Target(chosen, effective)
    base = base_of(effective, by_id)
    older = [m for m in mine if str(m["id"]) < str(base["id"])]
    if not older:
        raise InputError(
            f"{node}: phase {phase} has no release before {base['id']}: it was first deployed then, "
            "so there is nothing of its own to roll back to (a rollback never goes back into "
            "another phase's releases)",
            hint="to change it, deploy the wanted settings instead")
    return Target(base_of(older[-1], by_id), effective)


# --------------------------------------------------------------------------- the new release


def merged_compose(current_text: str, target_text: str, take: Sequence[str], drop: Sequence[str]) -> bytes:
    """The current compose project with `take` services as the target defines them, `drop` gone."""
    current = yaml.safe_load(current_text) or {}
    target = yaml.safe_load(target_text) or {}
    services = dict(current.get("services") or {})
    for name in take:
        if name in (target.get("services") or {}):
            services[name] = target["services"][name]
    for name in drop:
        services.pop(name, None)
    current["services"] = services
    for key in ("volumes", "networks"):
        merged = {**(target.get(key) or {}), **(current.get(key) or {})}
        if merged:
            current[key] = merged
    header = "# Built by swarm rollback: the current release with some services from an older one.\n"
    return (header + yaml.safe_dump(current, sort_keys=False, default_flow_style=False, width=1000)).encode()


@dataclass(frozen=True)
class RollbackPlan:
    """One phase on one node, going back."""

    node: Node
    target: Target
    release: str
    record: dict[str, Any]
    compose: bytes
    to_apply: tuple[str, ...]
    to_remove: tuple[str, ...]
    take: tuple[str, ...]
    kept_protected: tuple[str, ...]


def plan_rollback(node: Node, phase: int, state: NodeState, target: Target, phase_names: Sequence[str],
                  texts: tuple[str, str], by: str, run_id: str) -> RollbackPlan:
    current = state.current or {}
    current_applied = dict(current.get("applied", {}))
    target_applied = dict(target.release.get("applied", {}))
    phase_set = dict.fromkeys([*phase_names, *target.release.get("services", {}),
                               *target.effective.get("services", {})])
    protected = tuple(s for s in phase_set if node.is_protected(s))
    names = [s for s in phase_set if s not in protected]
    take = tuple(s for s in names if s in target_applied)
    drop = tuple(s for s in names if s in current_applied and s not in target_applied)
    to_apply = tuple(s for s in take if target_applied[s] != current_applied.get(s))
    applied = {k: v for k, v in current_applied.items() if k not in drop}
    applied.update({s: target_applied[s] for s in take})
    compose = merged_compose(texts[0], texts[1], take, drop)
    digest = hashlib.sha256(compose + str(target.release["id"]).encode()).hexdigest()
    from orchestrator.render.release import release_id

    release = release_id(digest, state.releases)
    record = {"id": release, "node": node.name, "hash": digest, "phase": phase, "by": by,
              "previous": state.current_id, "services": {s: target_applied[s] for s in take},
              "applied": applied, "action": "rollback", "rolled_back_to": target.release["id"],
              "rollback_of": target.effective["id"], "run": run_id,
              "images": dict(target.release.get("images", {})),
              **rollout.taken_extra(target.release, state, take)}
    return RollbackPlan(node=node, target=target, release=release, record=record, compose=compose,
                        to_apply=to_apply, to_remove=drop, take=take, kept_protected=protected)


def rollback_tar(plan: RollbackPlan) -> bytes:
    import io
    import json
    import tarfile

    tmp = f"{cmd.TMP_PREFIX}{plan.release}"
    files = {"compose.yml": plan.compose, RELEASE_FILE: json.dumps(plan.record, indent=2).encode(),
             cmd.APPLIED_FILE: applied_lines(dict(plan.record["applied"]))}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{tmp}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------------- the run


class Rollback:
    def __init__(self, project: Project, options: RollbackOptions, bus: EventBus, *,
                 interrupts: Interrupts | None = None, fleet: Fleet | None = None,
                 state_dir: Path | None = None, secrets: dict[str, Any] | None = None,
                 consul: ConsulSync | None = None, network: ProbeNetwork | None = None) -> None:
        self.project, self.opts, self.bus = project, options, bus
        self.interrupts = interrupts or Interrupts()
        self.consul = consul or ConsulSync.from_project(project, bus)
        self._fleet = fleet
        self.state_dir = state_dir or local_state_dir()
        self.given_secrets = secrets
        self.network = network
        self.states: dict[str, NodeState] = {}
        self.locked: set[str] = set()
        self._plans: list[RollbackPlan] = []

    async def run(self) -> dict[str, str]:
        sel = select(self.project, self.opts.phases, self.opts.limit)
        self.doors = rollout.doors_of(sel.services)
        self.ctx = new_run(self.opts.by, "rollback", sel.phase_ids)
        fleet = self._fleet or Fleet.for_nodes(self.project.inventory, sel.nodes, forks=self.opts.forks)
        async with fleet:
            sel = await self._connect(fleet, sel)
            try:
                await self._look(fleet, sel)
                return await self._phases(fleet, sel)
            finally:
                await self._unlock(fleet)

    async def _connect(self, fleet: Fleet, sel: Selection) -> Selection:
        await fleet.connect()
        optional = {n: e.message for n, e in fleet.unreachable.items() if sel.is_optional(n)}
        required = {n: e for n, e in fleet.unreachable.items() if n not in optional}
        if required:
            exc = next(iter(required.values()))
            raise RuntimeFailure(f"{exc.message}; nothing was changed on any node", hint=exc.hint)
        for node, why in optional.items():
            self.bus.emit("connect", "skipped", host=node, message=f"optional node skipped: {why}")
        return sel.without(optional)

    async def _look(self, fleet: Fleet, sel: Selection) -> None:
        async def one(node: Node) -> NodeState:
            request = LookRequest(deploy_root=node.deploy_root, run_id=self.ctx.run_id,
                                  holder=self.ctx.holder(), force_lock=True, manifests=True)
            result = await fleet[node.name].run(look_script(request), check=False, timeout=120)
            state = parse_look(request, result.steps, node.name)
            if state.lock.taken:
                self.locked.add(node.name)
            return state

        by_name = {n.name: n for n in sel.nodes}
        outcome = await fleet.map(lambda t: one(by_name[t.host]), list(by_name))
        self.states.update(outcome.succeeded)
        for name, exc in outcome.failed.items():
            raise exc if isinstance(exc, SwarmError) else RuntimeFailure(f"{name}: {exc}")
        for name, state in self.states.items():
            if not state.lock.taken:
                raise lock_held(name, state.lock.held_by or {}) if state.lock.held_by else RuntimeFailure(
                    f"{name}: cannot take the deploy lock: {state.lock.error}")

    async def _phases(self, fleet: Fleet, sel: Selection) -> dict[str, str]:
        runner = Runner(fleet, self.bus, run_id=self.ctx.run_id, by=self.opts.by, consul=self.consul,
                        pending=PendingStore(self.state_dir, self.project.inventory.fleet),
                        secrets=await self._bearer_secrets(sel),
                        thermal={n.name: n.thermal_limit_c for n in sel.nodes if n.gpus},
                        interrupts=self.interrupts, network=self.network, inventory=self.project.inventory,
                        doors=self.doors)
        plans = {scope.id: self._targets(scope, sel) for scope in sel.phases}  # refuse before any change
        done: dict[str, str] = {}
        for scope in reversed(sel.phases):
            texts = await self._compose_texts(fleet, plans[scope.id])
            await before_rollback(self.project, fleet, self.bus, {n: t[1] for n, t in texts.items()})
            work = self._work(scope, sel, plans[scope.id], texts)
            if not work.nodes:
                continue
            await runner.run_phase(work)
            for w in work.nodes:
                record = next(p for p in self._plans if p.node.name == w.node.name).record
                self.states[w.node.name] = self.states[w.node.name].after(record)
                done[w.node.name] = w.release
                self.bus.emit("rollback", "rolled-back", host=w.node.name, phase=scope.id,
                              message=f"current -> {w.release} (phase {scope.id} as in "
                                      f"{record['rolled_back_to']})")
        return done

    def _targets(self, scope: PhaseScope, sel: Selection) -> dict[str, Target]:
        out = {}
        for node in scope.nodes:
            target = find_target(node.name, self.states[node.name], scope.id, self.opts.to)
            if target.release["id"] == target.effective["id"] and self.opts.to is not None:
                self.bus.emit("rollback", "unchanged", host=node.name, phase=scope.id,
                              message=f"phase {scope.id} already runs {self.opts.to}")
                continue
            out[node.name] = target
        return out

    async def _compose_texts(self, fleet: Fleet, targets: Mapping[str, Target]) -> dict[str, tuple[str, str]]:
        async def one(name: str) -> tuple[str, str]:
            node = self.project.inventory.node(name)
            root = f"{node.deploy_root}/releases"
            current = self.states[name].current_id
            target = targets[name].release["id"]
            result = await fleet[name].run(cmd.Script.of(cmd.read_file(f"{root}/{current}/compose.yml"),
                                                         cmd.read_file(f"{root}/{target}/compose.yml"),
                                                         stop_on_error=False), check=False)
            texts = [cmd.parse_read_file(s.stdout) if s.ok else None for s in result.steps]
            if len(texts) != 2 or texts[0] is None or texts[1] is None:
                raise RuntimeFailure(f"{name}: release {target} is incomplete (no compose.yml): "
                                     "cannot roll back to it", hint="pick another with --to")
            return texts[0], texts[1]

        outcome = await fleet.map(lambda t: one(t.host), list(targets))
        for name, exc in outcome.failed.items():
            raise exc if isinstance(exc, SwarmError) else RuntimeFailure(f"{name}: {exc}")
        return dict(outcome.succeeded)

    def _work(self, scope: PhaseScope, sel: Selection, targets: Mapping[str, Target],
              texts: Mapping[str, tuple[str, str]]) -> PhaseWork:
        nodes = []
        self._plans = []
        for name, target in targets.items():
            node = self.project.inventory.node(name)
            state = self.states[name]
            phase_names = [s.name for s in sel.services_of(scope.id, name)]
            plan = plan_rollback(node, scope.id, state, target, phase_names, texts[name], self.opts.by,
                                 self.ctx.run_id)
            self._plans.append(plan)
            for svc in plan.kept_protected:
                self.bus.emit("rollback", "info", host=name, phase=scope.id,
                              message=f"{svc} is protected: left as it runs (a rollback never recreates it)")
            nodes.append(self._node_work(node, state, plan, sel.services_of(scope.id, name), len(targets)))
        return PhaseWork(phase=scope.id, name=scope.phase.name, action="rollback", spec=scope.phase.spec.gate,
                         nodes=nodes, consul_services=[s for w in nodes for s in w.gated])

    def _node_work(self, node: Node, state: NodeState, plan: RollbackPlan, services: Sequence[Service],
                   phase_nodes: int) -> NodeWork:
        previous = state.current_id
        assert previous is not None
        root = node.deploy_root
        build = [cmd.copy_release(root, previous, plan.release),
                 cmd.take_services(root, str(plan.target.release["id"]), plan.release, list(plan.take))]
        ways = rollout.plan_node(plan.to_apply, {}, services, state, node.project,
                                 shapes=plan.record["shapes"], configs=plan.record["configs"],
                                 doors=self.doors)
        apply = apply_step(node, plan.release, previous=previous, previous_applied=state.applied,
                           to_apply=ways.applied_by_step, to_remove=plan.to_remove, tar=rollback_tar(plan),
                           carry_env=False, build=build,
                           hooks=rollout.apply_hooks(node, ways, state, plan.release))
        audit = audit_line(node.name, "rollback", plan.record["phase"], self.opts.by, release=plan.release,
                           previous=previous, rolled_back_to=plan.target.release["id"],
                           services=list(plan.to_apply), removed=list(plan.to_remove), on_demand=True)
        keep = self.project.inventory.spec.keep_releases
        switch = switch_step(node, plan.release, previous=previous, audit=audit,
                             prune=prune_list(_protect(state.releases, plan), keep, new=plan.release,
                                              previous=previous))
        gated = tuple(s for s in services if s.name in plan.record["applied"])
        return NodeWork(node=node, release=plan.release, previous=previous, apply=apply, switch=switch,
                        restore=restore_of(previous, state.applied, ways.applied_by_step, plan.to_remove),
                        gated=gated, rolling=ways.rolling, reloads=ways.reload)

    async def _bearer_secrets(self, sel: Selection) -> dict[str, Any]:
        if self.given_secrets is not None:
            return self.given_secrets
        return await bearer_secrets(self.project, sel.selected_services())

    async def _unlock(self, fleet: Fleet) -> None:
        held = [n for n in sorted(self.locked) if n not in fleet.unreachable]
        for name in held:
            node = self.project.inventory.node(name)
            await fleet[name].run(unlock_script(node, self.ctx.run_id), check=False)
        self.locked.clear()


async def bearer_secrets(project: Project, services: Sequence[Service]) -> dict[str, Any]:
    """The keys the gate's probes send (vLLM's /v1/models); every other secret is read only
    for the scrubber (clients/secrets_source.py read_for_gate)."""
    from orchestrator.clients.secrets_source import SecretSource, read_for_gate

    return await read_for_gate(SecretSource.from_project(project), services)


def _protect(releases: Sequence[str], plan: RollbackPlan) -> list[str]:
    """Pruning after a rollback never removes the release it went back to."""
    return [r for r in releases if r != plan.target.release["id"]]


async def rollback(project: Project, options: RollbackOptions, bus: EventBus, *,
                   interrupts: Interrupts | None = None) -> dict[str, str]:
    interrupts = interrupts or Interrupts()
    await resume_pending(project, bus, limit_to=None, interrupts=interrupts, only_if_overlap=_names(project, options))
    try:
        return await Rollback(project, options, bus, interrupts=interrupts).run()
    except StopRequested as stop:
        raise Interrupted(stop.signum, "interrupted before anything changed; nothing to roll back") from None


def _names(project: Project, options: RollbackOptions) -> set[str]:
    try:
        return {n.name for n in select(project, options.phases, options.limit, render=False).nodes}
    except InputError:
        return set()


# --------------------------------------------------------------------------- resume


async def resume_pending(project: Project, bus: EventBus, *, limit_to: set[str] | None,
                         interrupts: Interrupts, only_if_overlap: set[str] | None = None,
                         required: bool = False) -> bool:
    """Finish a cut-off unwind recorded on this controller; False when there is none to finish."""
    store = PendingStore(local_state_dir(), project.inventory.fleet)
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
    ctx = RunContext(run_id=pending.run_id, by=whoami(), action="rollback", phases=(pending.phase,))
    nodes = [project.inventory.node(n) for n in pending.nodes]
    async with Fleet.for_nodes(project.inventory, nodes) as fleet:
        await fleet.connect()
        if fleet.unreachable:
            name, exc = next(iter(fleet.unreachable.items()))
            raise RollbackFailed(f"{name} is still unreachable ({exc.message}): the interrupted rollback "
                                 f"of phase {pending.phase} cannot finish yet",
                                 hint="run `swarm rollback --resume` again when it answers")
        await _resume_nodes(project, bus, fleet, pending, ctx, interrupts)
    consul = ConsulSync.from_project(project, bus)
    consul.restore_records(pending.consul)
    await consul.undo()
    store.clear()
    bus.emit("rollback", "ok", phase=pending.phase, message="the interrupted rollback is finished")
    return True


async def _resume_nodes(project: Project, bus: EventBus, fleet: Fleet, pending: Pending, ctx: RunContext,
                        interrupts: Interrupts) -> None:
    clocks: dict[str, float | None] = {}

    async def one(name: str) -> None:
        node = project.inventory.node(name)
        record = pending.nodes[name]
        request = LookRequest(deploy_root=node.deploy_root, run_id=ctx.run_id, holder=ctx.holder(),
                              force_lock=True, docker=False)
        look = await fleet[name].run(look_script(request), check=False)
        state = parse_look(request, look.steps, name)
        if not state.lock.taken:
            raise lock_held(name, state.lock.held_by or {})
        if record.undone:  # only the re-check is left
            clocks[name] = None
            return
        audit = audit_line(name, "rollback", pending.phase, ctx.by, release=record.previous,
                           failed=record.failed_release, reason=f"resumed: {pending.reason}", resumed=True)
        result = await fleet[name].run(unwind_script(node, record.commands()), input=audit, check=False)
        check_result(name, result)
        from orchestrator.engine.runner import _clock_of

        clocks[name] = _clock_of(result)
        bus.emit("rollback", "changed", host=name, phase=pending.phase,
                 message=f"restored {record.previous or 'empty'}")

    outcome = await fleet.map(lambda t: one(t.host), list(pending.nodes))
    try:
        if outcome.failed:
            name, exc = next(iter(outcome.failed.items()))
            if isinstance(exc, SwarmError) and exc.exit_code == 4:
                raise exc
            raise RollbackFailed(f"{name}: the interrupted rollback failed again: {describe_cause(exc)}",
                                 hint=f"inspect {name} by hand: docker compose -p swarm-{name} ps")
        await _regate(project, bus, fleet, pending, clocks, interrupts)
    finally:
        for name in pending.nodes:
            if name not in fleet.unreachable:
                await fleet[name].run(unlock_script(project.inventory.node(name), ctx.run_id), check=False)


async def _regate(project: Project, bus: EventBus, fleet: Fleet, pending: Pending,
                  clocks: Mapping[str, float | None], interrupts: Interrupts) -> None:
    from orchestrator.render.fleet import render_fleet

    names = sorted(pending.nodes)
    rendered = render_fleet(project, names, for_node=True)
    services = [s for n in names for s in rendered.nodes[n].services if s.name in pending.nodes[n].restore]
    if not services:
        return
    try:
        spec = project.playbook.phase(pending.phase).spec.gate
    except InputError:
        from orchestrator.config.playbook import GateSpec

        spec = GateSpec()
    targets = {n: GateTarget(transport=fleet[n], project=project.inventory.node(n).project,
                             fresh_since=clocks.get(n)) for n in names}
    try:
        keys = await bearer_secrets(project, services)
    except SwarmError as exc:  # Vault sealed: gate on what needs no key
        bus.emit("rollback", "info", message=f"probes with a key skipped: {exc.message}")
        keys = {}
        services = [replace(s, probes=tuple(p for p in s.probes if not p.bearer_secret)) for s in services]
    gate = Gate(services=services, targets=targets, spec=spec, secrets=keys, bus=bus, phase=pending.phase,
                hold_cap=RESTORE_HOLD, what="restore", interrupts=interrupts, unwinding=True)
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


__all__ = ["Rollback", "RollbackOptions", "rollback", "resume_pending", "forget_pending", "find_target"]
