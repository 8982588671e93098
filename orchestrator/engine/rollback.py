"""`swarm rollback`: the same runner, applied to an older release of the same phase.

For each node of the phase, under its lock (taken first, like a deploy's):

* the target is the release of *this phase* that ran before the one in effect now (or
  `--to` a named release of this phase). A phase with no earlier release of its own is
  refused, naming it — rolling back never reaches into another phase's releases;
* a new release is built on the node: a copy of the current one whose services of this
  phase (compose definition, env file, config copy) are taken from the target; the other
  phases' services stay exactly as they run;
* the images of the services it brings back are on the node (else pulled): the target's
  compose names each by the digest its release recorded, so a rollback needs no registry when
  they are there, and one that is neither there nor pullable stops the run before any change,
  naming the image;
* then the deploy's steps: apply (compose up what differs, rm what the target did not
  have), gate, Consul, switch, audit — and the same unwind if any of it fails.

Protected services (Qdrant) are never named in a compose command: a rollback leaves them
as they run and says so.

A rollback is per phase: `--phase` names exactly one (engine/phases.py). A cut-off unwind
that touches these nodes is finished first (engine/resume.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import takewhile
from typing import Any

import yaml

from orchestrator import commands as cmd
from orchestrator.clients.secrets_source import SecretSource, read_for_gate
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project
from orchestrator.engine import rollout
from orchestrator.engine.consul import ConsulSync
from orchestrator.engine.context import Boundaries, new_run, whoami
from orchestrator.engine.journal import NodeWork, PhaseWork
from orchestrator.engine.pending import PendingStore
from orchestrator.engine.resume import resume_pending
from orchestrator.engine.runner import Runner
from orchestrator.engine.selection import PhaseScope, Selection, select
from orchestrator.engine.session import Look, Session
from orchestrator.engine.signals import Interrupted, Interrupts, StopRequested
from orchestrator.engine.steps import apply_step, audit_line, prune_list, restore_of, switch_step
from orchestrator.errors import InputError, RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import LookRequest, NodeState
from orchestrator.facts.probes import ProbeNetwork
from orchestrator.models.run import before_rollback
from orchestrator.paths import local_state_dir
from orchestrator.render.release import RELEASE_FILE, applied_lines, release_id
from orchestrator.render.services import Service, probe_keys
from orchestrator.secrets import Secret
from orchestrator.transport.ssh import DEFAULT_FORKS, target_for


@dataclass(frozen=True)
class RollbackOptions:
    phase: int
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
    # the render's header, as the target release has it: a rollback to what the inventory renders
    # now is byte for byte that render (`swarm verify` compares the files)
    header = "".join(takewhile(lambda line: line.startswith("#"), target_text.splitlines(keepends=True)))
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
    release = release_id(digest, state.releases)
    record = {"id": release, "node": node.name, "hash": digest, "phase": phase, "by": by,
              "previous": state.current_id, "services": {s: target_applied[s] for s in take},
              "applied": applied, "action": "rollback", "rolled_back_to": target.release["id"],
              "rollback_of": target.effective["id"], "run": run_id,
              "images": dict(target.release.get("images", {})),
              "models": {**{k: v for k, v in dict(current.get("models") or {}).items() if k not in take},
                         **{k: v for k, v in dict(target.release.get("models") or {}).items() if k in take}},
              **rollout.taken_extra(target.release, state, take)}
    return RollbackPlan(node=node, target=target, release=release, record=record, compose=compose,
                        to_apply=to_apply, to_remove=drop, take=take, kept_protected=protected)


def images_of(plan: RollbackPlan) -> dict[str, str]:
    """service -> the image (pinned by its digest) the rollback's compose starts it from."""
    services = (yaml.safe_load(plan.compose) or {}).get("services") or {}
    return {s: str(services[s]["image"]) for s in plan.to_apply
            if isinstance(services.get(s), dict) and services[s].get("image")}


def missing_images(node: str, plan: RollbackPlan, images: Mapping[str, str], missing: Sequence[str]) -> RuntimeFailure:
    named = "; ".join(f"{ref} ({', '.join(s for s, r in sorted(images.items()) if r == ref)})" for ref in missing)
    return RuntimeFailure(
        f"{node}: the rollback to {plan.target.release['id']} needs image(s) the node does not have and could not "
        f"pull: {named}; nothing was changed",
        hint="start the registry they come from (or the fleet's registry.mirror), or stage each image on the node "
             "(`docker pull` it there, or `docker load` a saved copy), then run the rollback again")


def rollback_tar(plan: RollbackPlan) -> bytes:
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
    """One `swarm rollback --phase N` over its session: lock (forced) and look, find each node's
    target, build the release, then the deploy's runner; the session unlocks on every path."""

    def __init__(self, project: Project, options: RollbackOptions, bus: EventBus, *,
                 interrupts: Interrupts | None = None, world: Boundaries | None = None) -> None:
        self.project, self.opts, self.bus = project, options, bus
        self.world = world = world or Boundaries()
        self.interrupts = interrupts or Interrupts()
        self.consul = world.consul or ConsulSync.from_project(project, bus)
        self.network = world.network or ProbeNetwork.for_inventory(project.inventory)
        self.doors: list[Service] = []

    async def run(self, sel: Selection | None = None) -> dict[str, str]:
        sel = sel or select(self.project, (self.opts.phase,), self.opts.limit)
        self.doors = rollout.doors_of(sel.services)
        async with self._open(sel) as session:
            sel = sel.without(await session.connect(sel.names))
            looks = {n.name: Look(LookRequest(deploy_root=n.deploy_root, manifests=True), "force") for n in sel.nodes}
            await session.look(looks)
            for name in looks:
                session.require_lock(name)
            return await self._phase(session, sel.phases[0], sel)

    def _open(self, sel: Selection) -> Session:
        ctx = new_run(self.opts.by, "rollback", sel.phase_ids)
        roots = {n.name: n.deploy_root for n in sel.nodes}
        if self.world.fleet is not None:
            return Session(self.world.fleet, ctx, self.bus, roots, sel.optional)
        targets = [target_for(self.project.inventory, n, optional=sel.is_optional(n.name)) for n in sel.nodes]
        return Session.over_ssh(targets, ctx, self.bus, roots=roots, forks=self.opts.forks,
                                where=str(self.project.inventory.path))

    async def _phase(self, session: Session, scope: PhaseScope, sel: Selection) -> dict[str, str]:
        runner = Runner(session.fleet, self.bus, run_id=session.ctx.run_id, by=self.opts.by, consul=self.consul,
                        pending=PendingStore(self.world.state_dir or local_state_dir(), self.project.inventory.fleet),
                        secrets=await self._bearer_secrets(sel),
                        thermal={n.name: n.thermal_limit_c for n in sel.nodes if n.gpus},
                        interrupts=self.interrupts, network=self.network, inventory=self.project.inventory,
                        doors=self.doors)
        targets = self._targets(session, scope)  # refuse before any change
        texts = await self._compose_texts(session, targets)
        await before_rollback(self.project, session.fleet, self.bus, {n: t[1] for n, t in texts.items()})
        work, plans = self._work(session, scope, sel, targets, texts)
        if not work.nodes:
            return {}
        await self._images_present(session, plans)
        await runner.run_phase(work)
        done: dict[str, str] = {}
        for w in work.nodes:
            record = plans[w.node.name].record
            session.states[w.node.name] = session.states[w.node.name].after(record)
            done[w.node.name] = w.release
            self.bus.emit("rollback", "rolled-back", host=w.node.name, phase=scope.id,
                          message=f"current -> {w.release} (phase {scope.id} as in {record['rolled_back_to']})")
        return done

    async def _images_present(self, session: Session, plans: Mapping[str, RollbackPlan]) -> None:
        """Every image the rollback starts is on its node (or pulled now); else stop, naming it."""
        wanted = {name: images_of(plan) for name, plan in plans.items()}
        outcome = await session.fleet.map(
            lambda t: t.run(cmd.images_present(sorted(set(wanted[t.host].values()))), check=False, timeout=900),
            [n for n, refs in wanted.items() if refs])
        for name, exc in outcome.failed.items():
            raise exc if isinstance(exc, SwarmError) else RuntimeFailure(f"{name}: {exc}")
        for name, result in sorted(outcome.succeeded.items()):
            missing = cmd.parse_missing_images(result.stdout)
            if missing:
                raise missing_images(name, plans[name], wanted[name], missing)

    def _targets(self, session: Session, scope: PhaseScope) -> dict[str, Target]:
        out = {}
        for node in scope.nodes:
            target = find_target(node.name, session.states[node.name], scope.id, self.opts.to)
            if target.release["id"] == target.effective["id"] and self.opts.to is not None:
                self.bus.emit("rollback", "unchanged", host=node.name, phase=scope.id,
                              message=f"phase {scope.id} already runs {self.opts.to}")
                continue
            out[node.name] = target
        return out

    async def _compose_texts(self, session: Session, targets: Mapping[str, Target]) -> dict[str, tuple[str, str]]:
        async def one(name: str) -> tuple[str, str]:
            root = f"{session.roots[name]}/releases"
            current, target = session.states[name].current_id, targets[name].release["id"]
            result = await session.fleet[name].run(cmd.Script.of(cmd.read_file(f"{root}/{current}/compose.yml"),
                                                                 cmd.read_file(f"{root}/{target}/compose.yml"),
                                                                 stop_on_error=False), check=False)
            texts = [cmd.parse_read_file(s.stdout) if s.ok else None for s in result.steps]
            if len(texts) != 2 or texts[0] is None or texts[1] is None:
                raise RuntimeFailure(f"{name}: release {target} is incomplete (no compose.yml): "
                                     "cannot roll back to it", hint="pick another with --to")
            return texts[0], texts[1]

        outcome = await session.fleet.map(lambda t: one(t.host), list(targets))
        for name, exc in outcome.failed.items():
            raise exc if isinstance(exc, SwarmError) else RuntimeFailure(f"{name}: {exc}")
        return dict(outcome.succeeded)

    def _work(self, session: Session, scope: PhaseScope, sel: Selection, targets: Mapping[str, Target],
              texts: Mapping[str, tuple[str, str]]) -> tuple[PhaseWork, dict[str, RollbackPlan]]:
        nodes, plans = [], {}
        for name, target in targets.items():
            node, state = self.project.inventory.node(name), session.states[name]
            phase_names = [s.name for s in sel.services_of(scope.id, name)]
            plan = plans[name] = plan_rollback(node, scope.id, state, target, phase_names, texts[name],
                                               self.opts.by, session.ctx.run_id)
            for svc in plan.kept_protected:
                self.bus.emit("rollback", "info", host=name, phase=scope.id,
                              message=f"{svc} is protected: left as it runs (a rollback never recreates it)")
            nodes.append(self._node_work(node, state, plan, sel.services_of(scope.id, name)))
        return PhaseWork(phase=scope.id, name=scope.phase.name, action="rollback", spec=scope.phase.spec.gate,
                         nodes=nodes, consul_services=[s for w in nodes for s in w.gated]), plans

    def _node_work(self, node: Node, state: NodeState, plan: RollbackPlan, services: Sequence[Service]) -> NodeWork:
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
                           hooks=rollout.apply_hooks(node, ways, state, plan.release, pull=False))
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

    async def _bearer_secrets(self, sel: Selection) -> Mapping[str, Secret]:
        if self.world.secrets is not None:
            return self.world.secrets
        return await bearer_secrets(self.project, sel.selected_services())


async def bearer_secrets(project: Project, services: Sequence[Service]) -> dict[str, Secret]:
    """The keys the gate's probes send (vLLM's /v1/models); every other secret is read only
    for the scrubber (clients/secrets_source.py read_for_gate)."""
    return await read_for_gate(SecretSource.from_project(project), probe_keys(services))


def _protect(releases: Sequence[str], plan: RollbackPlan) -> list[str]:
    """Pruning after a rollback never removes the release it went back to."""
    return [r for r in releases if r != plan.target.release["id"]]


async def rollback(project: Project, options: RollbackOptions, bus: EventBus, *,
                   interrupts: Interrupts | None = None) -> dict[str, str]:
    """Finish a cut-off unwind that touches these nodes first, then roll the phase back."""
    interrupts = interrupts or Interrupts()
    sel = select(project, (options.phase,), options.limit)
    await resume_pending(project, bus, limit_to=None, interrupts=interrupts, only_if_overlap=set(sel.names))
    try:
        return await Rollback(project, options, bus, interrupts=interrupts).run(sel)
    except StopRequested as stop:
        raise Interrupted(stop.signum, "interrupted before anything changed; nothing to roll back") from None


__all__ = ["Rollback", "RollbackOptions", "rollback", "find_target"]
