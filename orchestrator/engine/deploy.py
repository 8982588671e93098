"""`swarm deploy`: the selected phases in order, each a transaction over its nodes.

Runbook of one run (design.md):

  select (phases, nodes; every service built and the chosen nodes rendered once)
  -> read the secrets from Vault, one request per path, while the SSH connections open
  -> per node ONE command, the look: lock, then read (the lock only where something
     differs, so a no-op run costs one connection and one command per node and no lock);
     the preflight facts come in the same command on the nodes about to change
  -> plan every phase from what was read under the lock; nothing to do? done
  -> the phases' preflight on the nodes about to change (registry lookups in parallel)
  -> phase by phase: apply, gate, Consul, switch — the runner (runner.py) unwinds a
     phase that fails or is interrupted; earlier phases stay on their new releases,
     later phases do not run
  -> release every lock this run took, on every path.
"""

from __future__ import annotations

import asyncio
import difflib
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator import commands as cmd
from orchestrator.clients.secrets_source import SecretSource
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project
from orchestrator.engine import rollout
from orchestrator.engine.consul import ConsulSync
from orchestrator.engine.context import DeployResult, RunContext, new_run, whoami
from orchestrator.engine.fastpath import (
    ConsulAccess,
    FastOutcome,
    NodePlan,
    PlanCache,
    PlanRecord,
    VaultAccess,
    expected_registration,
    secrets_digest,
)
from orchestrator.engine.gate import ProbeNetwork
from orchestrator.engine.pending import PendingStore
from orchestrator.engine.plan import (
    NodeChange,
    applied_after,
    content_for,
    expected_lines,
    infra_of,
    plan_change,
)
from orchestrator.engine.runner import NodeWork, PhaseWork, Runner
from orchestrator.engine.selection import PhaseScope, Selection, select
from orchestrator.engine.signals import Interrupted, Interrupts, StopRequested
from orchestrator.engine.steps import (
    apply_step,
    audit_line,
    prune_list,
    restore_of,
    switch_step,
    unlock_script,
)
from orchestrator.errors import InputError, LockHeld, RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import (
    LookRequest,
    NodeState,
    describe_holder,
    is_stale,
    look_script,
    parse_look,
)
from orchestrator.models.run import before_deploy
from orchestrator.paths import local_state_dir
from orchestrator.render.pins import moved_images, pin_compose, recorded_images
from orchestrator.render.release import ReleaseContent, manifest, release_id, tarball
from orchestrator.render.services import Service
from orchestrator.secrets import MASK, Secret, scrub
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.ssh import DEFAULT_FORKS


@dataclass(frozen=True)
class Options:
    phases: tuple[int, ...] | None = None
    limit: str | None = None
    check: bool = False
    diff: bool = False
    forks: int = DEFAULT_FORKS
    skip_preflight: bool = False
    by: str = field(default_factory=whoami)


class Deploy:
    """One `swarm deploy` run (see the module docstring)."""

    def __init__(self, project: Project, options: Options, bus: EventBus, *,
                 secret_source: SecretSource | None = None, interrupts: Interrupts | None = None,
                 fleet: Fleet | None = None, state_dir: Path | None = None,
                 secrets: dict[str, Secret] | None = None, consul: ConsulSync | None = None,
                 network: ProbeNetwork | None = None, handover: FastOutcome | None = None,
                 run_ctx: RunContext | None = None, plan_cache: PlanCache | None = None,
                 plan_key: str | None = None) -> None:
        self.project = project
        self.opts = options
        self.bus = bus
        self.source = secret_source or SecretSource.from_project(project)
        self.interrupts = interrupts or Interrupts()
        self._fleet = fleet
        self.state_dir = state_dir or local_state_dir()
        self.consul = consul or ConsulSync.from_project(project, bus)
        self.given_secrets = secrets        # facts in: a caller (a test) that read them already
        self.probe_network = network
        self.network = (project.inventory.spec.network.name, project.inventory.spec.network.subnet)
        self.locked: set[str] = set()
        self.states: dict[str, NodeState] = {}
        self.pins: dict[str, str] = {}
        self.weights: dict[str, dict[str, Any]] = {}   # service -> the revision it serves (models/)
        self.digests: dict[str, str] = {}              # image -> the digest its tag names now (render/pins.py)
        self._records: dict[str, tuple[dict[str, Any], bool, list[str]]] = {}
        self.handover = handover          # what the fast path already opened, read and locked
        self.given_ctx = run_ctx
        self.plan_cache, self.plan_key = plan_cache, plan_key
        if handover is not None:
            self._fleet = self._fleet or handover.fleet
            if self.given_secrets is None and handover.secrets is not None:
                self.given_secrets = handover.secrets
            self.locked.update(n for n, s in handover.states.items() if s.lock.taken)

    # ------------------------------------------------------------ entry

    async def run(self) -> DeployResult:
        sel = select(self.project, self.opts.phases, self.opts.limit)
        self.selected = sel
        self.run_ctx = self.given_ctx or new_run(self.opts.by, "deploy", sel.phase_ids)
        if self.handover is None:
            self.bus.emit("run", "start", message=self._headline(sel))
        names = self.source.names_for(sel.selected_services())
        secrets_task = asyncio.ensure_future(self._secrets(names))
        digests_task = asyncio.ensure_future(self._digests(sel))   # registry HEADs while SSH connects
        fleet = self._fleet or Fleet.for_nodes(self.project.inventory, sel.nodes, forks=self.opts.forks,
                                               check=self.opts.check)
        try:
            async with fleet:
                sel = await self._connect(fleet, sel)
                secrets = await secrets_task
                self.digests = await digests_task
                self.bus.emit("secrets", "ok", message=f"{len(secrets)} secrets read (values never shown)")
                try:
                    return await self._run(fleet, sel, secrets)
                finally:
                    await self._unlock_all(fleet)
        finally:
            for task in (secrets_task, digests_task):
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    async def _digests(self, sel: Selection) -> dict[str, str]:
        """What each image's tag names now (not with --skip-preflight: nothing was verified)."""
        if self.opts.skip_preflight:
            return {}
        from orchestrator.preflight.run import current_digests

        return await current_digests(self.project, sorted({s.image for s in sel.selected_services()}))

    async def _secrets(self, names: set[str]) -> dict[str, Secret]:
        if self.given_secrets is not None:
            return {n: self.given_secrets[n] for n in names if n in self.given_secrets}
        return await self.source.read_async(names)

    def _headline(self, sel: Selection) -> str:
        phases = ", ".join(f"{s.id} ({s.phase.name})" for s in sel.phases)
        return f"phase {phases} on {', '.join(n.name for n in sel.nodes)}" + (
            " [check]" if self.opts.check else "")

    async def _connect(self, fleet: Fleet, sel: Selection) -> Selection:
        """Every connection at once; an optional node that is down is skipped, a required one stops the run.

        Connections the fast path opened are kept; a node it found unreachable is not tried twice."""
        await fleet.connect([h for h in fleet.hosts if h not in fleet.unreachable] if self.handover else None)
        for name in fleet.hosts:
            if name in fleet.unreachable:
                self.bus.emit("connect", "failed", host=name, message=fleet.unreachable[name].message)
            else:
                self.bus.emit("connect", "ok", host=name)
        optional = {n: e.message for n, e in fleet.unreachable.items() if sel.is_optional(n)}
        required = {n: e for n, e in fleet.unreachable.items() if n not in optional}
        if required:
            node, exc = next(iter(required.items()))
            raise RuntimeFailure(f"{exc.message}; nothing was changed on any node",
                                 hint=exc.hint or f"bring {node} back, or leave it out with --limit")
        for node, why in optional.items():
            self.bus.emit("connect", "skipped", host=node, message=f"optional node skipped: {why}")
        if len(optional) == len(fleet.hosts):
            raise RuntimeFailure("every selected node is optional and unreachable: nothing to do")
        return sel.without(optional)

    async def _run(self, fleet: Fleet, sel: Selection, secrets: dict[str, Secret]) -> DeployResult:
        await self._look(fleet, sel, secrets, force=set())
        changes = self._plan(sel, secrets)
        result = DeployResult(phases=sel.phase_ids, skipped=dict(sel.skipped))
        if self.opts.check:
            result.check_report = await self._check_report(fleet, sel, changes)
            return self._finish(result, fleet, sel)
        drifted = {c.node.name for c in changes if c.changed and not self.states[c.node.name].lock.taken
                   and not self.states[c.node.name].lock.is_held_elsewhere}
        if drifted:  # the node saw nothing different, but we do (a container not running)
            await self._look(fleet, sel, secrets, force=drifted)
            changes = self._plan(sel, secrets)
        self._require_locks(changes)
        moving = [c for c in changes if c.changed]
        if not moving:
            await self._reconcile_consul(sel)
            self.bus.emit("run", "unchanged", message="nothing to change: every node runs what is wanted")
            self._remember(secrets)
            return self._finish(result, fleet, sel)
        self.interrupts.check()
        await self._preflight(sel, moving)
        self.weights = await before_deploy(self.project, fleet, self.bus, [s for c in moving for s in c.services],
                                           [n for c in moving for n in c.to_apply], secrets)
        await self._phases(fleet, sel, changes, secrets, result)
        await self._reconcile_consul(sel, skip={c.phase.id for c in moving})
        self.bus.emit("run", "ok", message=f"{len(result.changed_nodes)} node(s) on new releases, healthy")
        self._remember(secrets)
        return self._finish(result, fleet, sel)

    # ------------------------------------------------------------ the plan record (fastpath.py)

    def _remember(self, secrets: Mapping[str, Secret]) -> None:
        """Leave the record the next run's fast path checks against (best effort)."""
        if self.plan_cache is None or self.plan_key is None:
            return
        spec = self.project.inventory.spec
        if getattr(spec.vault, "client_cert", None) or getattr(spec.consul, "client_cert", None):
            return  # client certificates: the fast path leaves those to the real clients
        try:
            self.plan_cache.save(self._plan_record(secrets))
        except (OSError, SwarmError) as exc:
            self.bus.emit("run", "info", message=f"plan record not written: {exc}")

    def _plan_record(self, secrets: Mapping[str, Secret]) -> PlanRecord:
        from dataclasses import asdict as to_dict

        from orchestrator.transport.ssh import target_for

        sel, inventory = self.selected, self.project.inventory
        targets = {n.name: target_for(inventory, n) for n in sel.nodes}
        nodes = {}
        for node in sel.nodes:
            request = self._look_request(sel, node, secrets, force=False)
            target = {k: (str(v) if isinstance(v, Path) else v) for k, v in to_dict(targets[node.name]).items()}
            services = [s.name for scope in sel.phases_of(node.name) for s in sel.services_of(scope.id, node.name)
                        if not s.protected]
            nodes[node.name] = NodePlan(target=target, deploy_root=node.deploy_root, project=node.project,
                                        expected=list(request.expected), directories=list(request.directories),
                                        network=request.network, docker=request.docker, services=services,
                                        optional=sel.is_optional(node.name))
        registry = self.project.inventory.spec.registry
        return PlanRecord(key=self.plan_key or "", phases=list(sel.phase_ids), holder_phases=list(sel.phase_ids),
                          nodes=nodes, vault=self._vault_access(secrets), secrets=secrets_digest(secrets),
                          consul=self._consul_access(sel), images=dict(self.digests),
                          insecure=[registry.mirror] if registry.mirror and registry.insecure else [])

    def _vault_access(self, secrets: Mapping[str, Secret]) -> VaultAccess | None:
        if not secrets:
            return None
        source = self.source
        paths = {n: [source.full_path(source.declared[n]), source.declared[n].key] for n in secrets}
        ca = getattr(self.project.inventory.spec.vault, "ca_cert", None)
        ca_path = self.project.inventory.resolve_path(ca) if ca else None
        return VaultAccess(addr=str(source.addr), mount=source.mount, paths=paths,
                           token_file=str(source.token_file) if source.token_file else None,
                           ca_cert=str(ca_path) if ca_path else None)

    def _consul_access(self, sel: Selection) -> ConsulAccess | None:
        if self.consul.addr is None:
            return None
        from orchestrator.engine.consul import registration

        spec = self.project.inventory.spec.consul
        token = self.project.inventory.resolve_path(spec.token_file)
        expected = {}
        for scope in sel.phases:
            for svc in sel.phase_services(scope.id):
                state = self.states.get(svc.node)
                if svc.consul is None or state is None or svc.name not in state.applied:
                    continue
                payload = registration(svc, state.current_id or "", self.project.inventory.fleet).to_payload()
                expected[payload["ID"]] = expected_registration(payload, svc.node)
        ca = self.project.inventory.resolve_path(getattr(spec, "ca_cert", None))
        return ConsulAccess(addr=str(self.consul.addr), token_file=str(token) if token else None,
                            token_env=spec.token_env, expected=expected, ca_cert=str(ca) if ca else None)

    def _finish(self, result: DeployResult, fleet: Fleet, sel: Selection) -> DeployResult:
        for node in sel.nodes:
            state = self.states.get(node.name)
            result.releases[node.name] = (state.current_id if state else None) or ""
            if node.name not in result.changed_nodes:
                result.unchanged.append(node.name)
        result.stats = dict(fleet.stats())
        return result

    # ------------------------------------------------------------ lock, then look

    async def _look(self, fleet: Fleet, sel: Selection, secrets: Mapping[str, Secret],
                    force: set[str]) -> None:
        nodes = [n for n in sel.nodes if not force or n.name in force]
        requests = {n.name: self._look_request(sel, n, secrets, force=n.name in force) for n in nodes}
        preflight = self._preflight_requests(sel)
        if preflight is not None:
            requests = {n: replace(r, preflight=preflight.commands(n)) for n, r in requests.items()}

        async def one(node: Node) -> NodeState:
            request = requests[node.name]
            result = await fleet[node.name].run(look_script(request), check=False, timeout=120)
            state = parse_look(request, result.steps, node.name)
            if state.lock.taken:
                self.locked.add(node.name)
            self.bus.emit("facts", "ok", host=node.name,
                          message=f"current {state.current_id or 'none'}"
                                  + (" (locked)" if state.lock.taken else ""))
            return state

        by_name = {n.name: n for n in nodes}
        outcomes = await fleet.map(lambda t: one(by_name[t.host]), list(by_name))
        failed = outcomes.failed
        self.states.update(outcomes.succeeded)
        if failed:
            node, exc = next(iter(failed.items()))
            raise exc if isinstance(exc, SwarmError) else RuntimeFailure(f"{node}: {exc}")
        for name, state in outcomes.succeeded.items():
            if state.docker_error and sel.phases_of(name):
                self._docker_problem(sel, name, state)

    def _look_request(self, sel: Selection, node: Node, secrets: Mapping[str, Secret], *,
                      force: bool) -> LookRequest:
        scopes = sel.phases_of(node.name)
        render = sel.fleet.nodes[node.name]
        contents = [content_for(render, s.id, secrets) for s in scopes]
        infra = [i for i in (infra_of(s.phase, self.network) for s in scopes) if i is not None]
        directories = tuple(dict.fromkeys(d for i in infra for d in i.directories))
        network = next((i.network[0] for i in infra if i.network), None)
        wants_docker = any(sel.services_of(s.id, node.name) for s in scopes) or network is not None
        return LookRequest(deploy_root=node.deploy_root, run_id=self.run_ctx.run_id,
                           holder=self.run_ctx.holder(), expected=expected_lines(contents),
                           directories=directories, network=network, docker=wants_docker,
                           lock=not self.opts.check, force_lock=force)

    def _docker_problem(self, sel: Selection, node: str, state: NodeState) -> None:
        user = self.project.inventory.node(node).ssh.user
        raise RuntimeFailure(f"{node}: docker is not usable by {user}: {state.docker_error}",
                             hint="is dockerd running, and is the user in the docker group?")

    def _require_locks(self, changes: Sequence[NodeChange]) -> None:
        """Every node about to change must be locked by this run (else exit 4, nothing changed)."""
        for change in changes:
            if not change.changed:
                continue
            state = self.states[change.node.name]
            if state.lock.taken:
                continue
            if state.lock.error:
                raise RuntimeFailure(
                    f"{change.node.name}: cannot take the deploy lock in {change.node.deploy_root}/.lock: "
                    f"{state.lock.error}",
                    hint=f"can {change.node.ssh.user} write to {change.node.deploy_root}?")
            raise lock_held(change.node.name, state.lock.held_by or {})

    # ------------------------------------------------------------ plan

    def _plan(self, sel: Selection, secrets: Mapping[str, Secret]) -> list[NodeChange]:
        changes = []
        for scope in sel.phases:
            for node in scope.nodes:
                render = sel.fleet.nodes[node.name]
                change = plan_change(scope.phase, node, render, self.states[node.name], secrets, self.network)
                changes.append(self._moved_images(change))
        return changes

    def _moved_images(self, change: NodeChange) -> NodeChange:
        """A tag that names another digest than the node runs is a change (render/pins.py)."""
        moved = moved_images(change.services, recorded_images(self.states[change.node.name].current), self.digests)
        new = [s for s in moved if s not in change.to_apply and s not in change.adopted]
        if not new:
            return change
        return replace(change, to_apply=(*change.to_apply, *new), reasons={**change.reasons, **{s: moved[s] for s in new}})

    # ------------------------------------------------------------ preflight

    def _preflight_scope(self, sel: Selection, nodes: Sequence[str] | None = None) -> Any:
        from orchestrator.preflight.scope import Scope

        chosen = [n for n in sel.nodes if nodes is None or n.name in nodes]
        names = {n.name for n in chosen}
        services = tuple(s for s in sel.selected_services() if s.node in names)
        ids = sel.phase_ids
        return Scope(phases=ids, nodes=tuple(chosen), services=services)

    def _preflight_requests(self, sel: Selection) -> Any:
        if self.opts.skip_preflight or self.opts.check:
            return None
        from orchestrator.preflight.run import plan_requests

        return plan_requests(self.project, self._preflight_scope(sel), list(sel.services), sel.fleet)

    async def _preflight(self, sel: Selection, moving: Sequence[NodeChange]) -> None:
        """The phases' checks on the nodes about to change; any failure stops before a change."""
        if self.opts.skip_preflight:
            self.bus.emit("preflight", "skipped", message="--skip-preflight")
            return
        from orchestrator.preflight.report import Report
        from orchestrator.preflight.run import (
            emit_report,
            external_answers,
            judge,
            parse_node_facts,
            plan_requests,
            require_passed,
        )
        from orchestrator.render.validate import check_rendered

        started = time.monotonic()
        names = sorted({c.node.name for c in moving})
        scope = self._preflight_scope(sel, names)
        coming = [s for c in moving for s in c.to_apply]
        requests = plan_requests(self.project, scope, list(sel.services), sel.fleet, coming=coming)
        facts = {n: (parse_node_facts(requests, n, self.states[n].preflight), 0.0) for n in names}
        checked = asyncio.to_thread(check_rendered, self.project, sel.fleet, cache_dir=local_state_dir() / "validated")
        answers, _ = await asyncio.gather(external_answers(self.project, scope, vault=False, facts=facts), checked)
        results, pins = judge(self.project, scope, requests, facts, {}, answers)
        report = Report.of(results, pins, duration_s=time.monotonic() - started)
        emit_report(self.bus, report, scope.phase)
        require_passed(report)
        self.pins = dict(report.pins)

    # ------------------------------------------------------------ the phases

    async def _phases(self, fleet: Fleet, sel: Selection, changes: Sequence[NodeChange],
                      secrets: dict[str, Secret], result: DeployResult) -> None:
        runner = Runner(fleet, self.bus, run_id=self.run_ctx.run_id, by=self.opts.by, consul=self.consul,
                        pending=PendingStore(self.state_dir, self.project.inventory.fleet),
                        secrets=secrets, thermal=self._thermal(sel), interrupts=self.interrupts,
                        network=self.probe_network, inventory=self.project.inventory,
                        doors=rollout.doors_of(sel.services))
        last_phase = {c.node.name: c.phase.id for c in changes if c.changed}
        for scope in sel.phases:
            mine = [c for c in changes if c.phase.id == scope.id and c.changed]
            if not mine:
                continue
            work = self._work(scope, mine, last_phase)
            self.bus.emit("phase", "start", phase=scope.id,
                          message=f"phase {scope.id} ({scope.phase.name}): "
                                  + "; ".join(f"{c.node.name}: {c.summary()}" for c in mine))
            await runner.run_phase(work)
            self._committed(work, mine, result)

    def _work(self, scope: PhaseScope, mine: Sequence[NodeChange], last_phase: Mapping[str, int]) -> PhaseWork:
        nodes = []
        for change in mine:
            fold_unlock = len(mine) == 1 and last_phase[change.node.name] == scope.id
            nodes.append(self._node_work(change, fold_unlock))
        return PhaseWork(phase=scope.id, name=scope.phase.name, action="deploy", spec=scope.phase.spec.gate,
                         nodes=nodes, consul_services=[s for c in mine for s in c.services])

    def _node_work(self, change: NodeChange, fold_unlock: bool) -> NodeWork:
        node, state = change.node, self.states[change.node.name]
        release = release_id(change.content.hash, state.releases)
        previous = state.current_id
        plan = rollout.plan_node(change.to_apply, change.reasons, change.services, state, node.project,
                                 shapes=change.content.shapes, configs=change.content.configs,
                                 doors=rollout.doors_of(self.selected.services))
        images = {**recorded_images(state.current),
                  **{s.name: self.pins[s.image] for s in change.services if s.image in self.pins}}
        record = manifest(change.content, release=release, phase=change.phase.id,
                          applied=applied_after(change, state), by=self.opts.by, previous=previous,
                          images=images,
                          models={s.name: self.weights[s.name] for s in change.services if s.name in self.weights},
                          run=self.run_ctx.run_id,
                          **rollout.release_extra(change.content.shapes, change.content.configs, state))
        infra = change.infra
        apply = apply_step(node, release, previous=previous, previous_applied=state.applied,
                           to_apply=plan.applied_by_step, tar=tarball(self._pinned(change, images), release, record),
                           directories=infra.directories if infra else (),
                           network=infra.network if infra else None,
                           hooks=rollout.apply_hooks(node, plan, state, release))
        keep = self.project.inventory.spec.keep_releases
        audit = audit_line(node.name, "deploy", change.phase.id, self.opts.by, release=release,
                           previous=previous, services=list(change.to_apply), adopted=list(change.adoptions))
        switch = switch_step(node, release, previous=previous, audit=audit,
                             prune=prune_list(state.releases, keep, new=release, previous=previous),
                             unlock_run=self.run_ctx.run_id if fold_unlock else None)
        self._records[node.name] = (record, fold_unlock, prune_list(state.releases, keep, new=release,
                                                                    previous=previous))
        return NodeWork(node=node, release=release, previous=previous, apply=apply, switch=switch,
                        restore=restore_of(previous, state.applied, plan.applied_by_step, ()),
                        gated=change.services, rolling=plan.rolling, reloads=plan.reload)

    def _pinned(self, change: NodeChange, images: Mapping[str, str]) -> ReleaseContent:
        """The release's compose names every image by the digest its release records."""
        services = self.selected.fleet.nodes[change.node.name].services
        pins = {s.name: (s.image, images[s.name]) for s in services if s.name in images}
        files = {**change.content.files, "compose.yml": pin_compose(change.content.files["compose.yml"], pins)}
        return replace(change.content, files=files)

    def _committed(self, work: PhaseWork, mine: Sequence[NodeChange], result: DeployResult) -> None:
        """The phase is in: the nodes' states are what this run made them."""
        result.changed[work.phase] = [w.node.name for w in work.nodes]
        for w in work.nodes:
            record, unlocked, pruned = self._records.pop(w.node.name)
            state = self.states[w.node.name].after(record)
            self.states[w.node.name] = replace(state, releases=tuple(r for r in state.releases if r not in pruned))
            if unlocked:
                self.locked.discard(w.node.name)
            self.bus.emit("switch", "ok", host=w.node.name, phase=work.phase,
                          message=f"current -> {w.release}", release=w.release)

    def _thermal(self, sel: Selection) -> dict[str, float]:
        return {n.name: n.thermal_limit_c for n in sel.nodes if n.gpus}

    # ------------------------------------------------------------ Consul, unlock

    async def _reconcile_consul(self, sel: Selection, skip: set[int] | None = None) -> None:
        """Registrations Consul lost (it was recreated, a node rebooted) are put back; HTTP only."""
        services = [s for scope in sel.phases if scope.id not in (skip or set())
                    for s in sel.phase_services(scope.id)
                    if s.name in self.states.get(s.node, NodeState(s.node)).applied]
        if not services:
            return
        releases = {n: s.current_id or "" for n, s in self.states.items()}
        try:
            for phase in sorted({s.phase for s in services}):
                await self.consul.register(phase, [s for s in services if s.phase == phase], releases)
        except SwarmError as exc:
            self.bus.emit("consul", "failed", message=f"could not check registrations: {exc.message}")
        self.consul.undo_log.clear()

    async def _unlock_all(self, fleet: Fleet) -> None:
        """Release every lock this run still holds (and record applied.txt where it was missing)."""
        if not self.locked:
            return
        held = sorted(self.locked)

        async def one(name: str) -> None:
            node = self.project.inventory.node(name)
            script = unlock_script(node, self.run_ctx.run_id)
            state = self.states.get(name)
            if state is not None and state.current is not None:
                from orchestrator.render.release import applied_lines

                script = cmd.Script.of(cmd.write_file(f"{node.deploy_root}/current/{cmd.APPLIED_FILE}", 0o644),
                                       *script.commands, stop_on_error=False)
                await fleet[name].run(script, input=applied_lines(state.applied), check=False)
            else:
                await fleet[name].run(script, check=False)
            self.locked.discard(name)

        outcome = await fleet.map(lambda t: one(t.host), [h for h in held if h not in fleet.unreachable])
        for name, exc in outcome.failed.items():
            self.bus.emit("lock", "failed", host=name, message=f"could not release the lock: {exc}")

    # ------------------------------------------------------------ --check, --diff

    async def _check_report(self, fleet: Fleet, sel: Selection, changes: Sequence[NodeChange]) -> list[str]:
        report: list[str] = []
        for change in changes:
            name, state = change.node.name, self.states[change.node.name]
            where = f"{name}: phase {change.phase.id}"
            if not change.changed:
                report.append(f"{where}: no changes (release {state.current_id})")
                self.bus.emit("check", "unchanged", host=name, phase=change.phase.id)
                continue
            report.append(f"{where}: would deploy a new release: {change.summary()}")
            self.bus.emit("check", "changed", host=name, phase=change.phase.id,
                          message=f"would apply {change.summary()}")
            if state.lock.held_by:
                report.append(f"{where}: note: the lock is held by {describe_holder(state.lock.held_by)}")
            if self.opts.diff:
                report.extend(await self._diff(fleet, change, state))
        moving = len({c.node.name for c in changes if c.changed})
        self.bus.emit("run", "ok", message=f"check: {moving} node(s) would change, nothing was modified")
        return report

    async def _diff(self, fleet: Fleet, change: NodeChange, state: NodeState) -> list[str]:
        node = change.node
        old: dict[str, str] = {}
        paths = sorted(change.content.files)
        if state.current_id:
            root = f"{node.deploy_root}/current"
            result = await fleet[node.name].run(
                cmd.Script.of(*(cmd.read_file(f"{root}/{p}") for p in paths), stop_on_error=False),
                check=False)
            for path, step in zip(paths, result.steps, strict=False):
                body = cmd.parse_read_file(step.stdout) if step.ok else None
                if body is not None:
                    old[path] = body
        lines: list[str] = []
        for path, data in change.content.files.items():
            new, before = data.decode(), old.get(path, "")
            if path.startswith("env/"):
                new, before = mask_env(new), mask_env(before)
            if new != before:
                lines.extend(difflib.unified_diff(before.splitlines(), new.splitlines(),
                                                  f"{node.name}:current/{path}", f"{node.name}:new/{path}",
                                                  lineterm=""))
        return [scrub(line) for line in lines]


def lock_held(node: str, holder: dict[str, Any]) -> LockHeld:
    if is_stale(holder, socket.gethostname()):
        return LockHeld(f"{node}: the deploy lock is held by {describe_holder(holder)}, "
                        "whose process is gone: the lock is stale",
                        hint=f"break it with `swarm unlock --limit {node}` "
                             "(then `swarm rollback --resume` if that run was cut off mid-phase)")
    return LockHeld(f"{node}: another deploy holds the lock: {describe_holder(holder)}",
                    hint=f"wait for it to finish; if it died, break the lock with "
                         f"`swarm unlock --limit {node}`")


def mask_env(text: str) -> str:
    """KEY='value' -> KEY=******** for --diff: names show, values never."""
    out = []
    for line in text.splitlines():
        key, sep, _ = line.partition("=")
        out.append(f"{key}={MASK}" if sep and not line.startswith("#") else line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


async def deploy(project: Project, options: Options, bus: EventBus, *,
                 interrupts: Interrupts | None = None, handover: FastOutcome | None = None,
                 run_ctx: RunContext | None = None, plan_cache: PlanCache | None = None,
                 plan_key: str | None = None) -> DeployResult:
    """Finish a pending unwind on these nodes first (a cut-off run), then deploy."""
    from orchestrator.engine.rollback import resume_pending

    interrupts = interrupts or Interrupts()
    if not options.check:
        await resume_pending(project, bus, limit_to=_selected_names(project, options),
                             interrupts=interrupts)
    try:
        return await Deploy(project, options, bus, interrupts=interrupts, handover=handover, run_ctx=run_ctx,
                            plan_cache=plan_cache, plan_key=plan_key).run()
    except StopRequested as stop:  # stopped before any node moved: locks are already released
        raise Interrupted(stop.signum, "interrupted before anything changed; nothing to roll back") from None


def _selected_names(project: Project, options: Options) -> set[str]:
    try:
        sel = select(project, options.phases, options.limit, render=False)
    except InputError:
        return set()
    return {n.name for n in sel.nodes}


def services_by_node(services: Sequence[Service]) -> dict[str, list[Service]]:
    out: dict[str, list[Service]] = {}
    for svc in services:
        out.setdefault(svc.node, []).append(svc)
    return out
