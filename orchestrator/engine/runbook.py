"""The deploy runbook: `swarm deploy` once the plan record could not answer (engine/deploy.py).

`run_deploy` loads the project, selects once (engine/selection.py), finishes a cut-off
unwind on the selected nodes, and runs `Deploy` over the session: the one the first
question opened (its connections, the states it read and any lock it took), or a new one.
Each step of `Deploy.run` is one line of the runbook in engine/deploy.py's docstring; the
phases themselves run in runner.py (a transaction per phase, unwound on any failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator import commands as cmd
from orchestrator.clients.secrets_source import SecretSource
from orchestrator.config.project import Project
from orchestrator.engine import rollout
from orchestrator.engine.check import check_report
from orchestrator.engine.consul import ConsulSync
from orchestrator.engine.context import Boundaries, DeployRequest, DeployResult, new_run, whoami
from orchestrator.engine.first import FirstAnswer
from orchestrator.engine.pending import PendingStore
from orchestrator.engine.plan import NodeChange, expected_lines, infra_of, plan_change
from orchestrator.engine.record import PlanCache
from orchestrator.engine.remember import plan_record
from orchestrator.engine.resume import resume_pending
from orchestrator.engine.runner import Runner
from orchestrator.engine.selection import Selection, parse_phases, select
from orchestrator.engine.session import LockMode, Look, Session
from orchestrator.engine.signals import Interrupted, Interrupts, StopRequested
from orchestrator.engine.work import Context, phase_work, with_moved_images, with_moved_weights
from orchestrator.errors import RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import LookRequest
from orchestrator.facts.probes import ProbeNetwork
from orchestrator.models.resolve import Resolution, ask_hub, hub_client, moving_pins
from orchestrator.models.run import before_deploy
from orchestrator.paths import local_state_dir
from orchestrator.preflight.run import check_deploy, current_digests, plan_requests
from orchestrator.render.release import applied_lines
from orchestrator.render.validate import check_rendered
from orchestrator.secrets import Secret
from orchestrator.transport.ssh import DEFAULT_FORKS, target_for


@dataclass(frozen=True)
class Options:
    phases: tuple[int, ...] | None = None
    limit: str | None = None
    check: bool = False
    diff: bool = False
    forks: int = DEFAULT_FORKS
    skip_preflight: bool = False
    by: str = field(default_factory=whoami)


async def run_deploy(request: DeployRequest, bus: EventBus, interrupts: Interrupts, *,
                     session: Session | None = None, first: FirstAnswer | None = None,
                     cache: PlanCache | None = None, key: str | None = None) -> DeployResult:
    project = request.load()
    options = Options(phases=parse_phases(request.phase_text, project), limit=request.limit,
                      check=request.check or request.diff, diff=request.diff, forks=request.forks,
                      skip_preflight=request.skip_preflight, by=request.by or whoami())
    sel = select(project, options.phases, options.limit)
    if not options.check:
        await resume_pending(project, bus, limit_to=set(sel.names), interrupts=interrupts)
    runbook = Deploy(project, options, bus, interrupts=interrupts, session=session, first=first,
                     cache=cache if key else None, key=key)
    try:
        return await runbook.run(sel)
    except StopRequested as stop:  # stopped before any node moved: the session released the locks
        raise Interrupted(stop.signum, "interrupted before anything changed; nothing to roll back") from None


class Deploy:
    """One `swarm deploy` run over its session (the runbook in engine/deploy.py)."""

    def __init__(self, project: Project, options: Options, bus: EventBus, *, interrupts: Interrupts | None = None,
                 session: Session | None = None, first: FirstAnswer | None = None,
                 world: Boundaries | None = None, cache: PlanCache | None = None, key: str | None = None) -> None:
        self.project, self.opts, self.bus = project, options, bus
        self.world = world = world or Boundaries()
        self.interrupts = interrupts or Interrupts()
        self.session, self.first = session, first
        self.source = SecretSource.from_project(project)
        self.consul = world.consul or ConsulSync.from_project(project, bus)
        self.network = world.network or ProbeNetwork.for_inventory(project.inventory)
        self.cache, self.key = cache, key
        self.looks: dict[str, Look] = {}
        self.pins: dict[str, str] = {}                 # image -> the digest preflight verified
        self.digests: dict[str, str] = {}              # image -> the digest its tag names now (render/pins.py)
        self.weights: dict[str, dict[str, Any]] = {}   # service -> the revision it serves (models/)
        self.revisions = Resolution()                  # moving revision -> the commit it names now (models/resolve.py)

    async def run(self, sel: Selection | None = None) -> DeployResult:
        sel = sel or select(self.project, self.opts.phases, self.opts.limit)
        if self.session is not None:
            return await self._over(self.session, sel)
        async with self._open(sel) as session:
            return await self._over(session, sel)

    async def _over(self, session: Session, whole: Selection) -> DeployResult:
        sel, secrets = await self._connect(session, whole)
        try:
            await self._look(session, sel, secrets)
            changes = self._plan(session, sel, secrets)
            result = DeployResult(phases=sel.phase_ids, skipped=dict(sel.skipped))
            if self.opts.check:
                result.check_report = await check_report(session, changes, self.opts.diff, self.bus)
                return self._finish(result, session, sel)
            changes = await self._repair(session, sel, secrets, changes)
            moving = [c for c in changes if c.changed]
            for change in moving:
                session.require_lock(change.node.name, change.node.ssh.user)
            if moving:
                self.interrupts.check()
                await self._preflight(session, sel, moving)
                await self.stage(session, moving, secrets)
                await self._phases(session, sel, changes, secrets, result)
            await self._reconcile_consul(session, sel, skip={c.phase.id for c in moving})
            self._say_done(result)
            self._remember(session, whole, secrets)
            return self._finish(result, session, sel)
        finally:
            await session.unlock_all(applied_first(session))

    # ------------------------------------------------------------ connect, secrets

    def _open(self, sel: Selection) -> Session:
        phases = ", ".join(f"{s.id} ({s.phase.name})" for s in sel.phases)
        self.bus.emit("run", "start", message=f"phase {phases} on {', '.join(sel.names)}"
                                              + (" [check]" if self.opts.check else ""))
        ctx = new_run(self.opts.by, "deploy", sel.phase_ids)
        roots = {n.name: n.deploy_root for n in sel.nodes}
        if self.world.fleet is not None:
            return Session(self.world.fleet, ctx, self.bus, roots, sel.optional)
        targets = [target_for(self.project.inventory, n, optional=sel.is_optional(n.name)) for n in sel.nodes]
        return Session.over_ssh(targets, ctx, self.bus, roots=roots, forks=self.opts.forks, check=self.opts.check,
                                where=str(self.project.inventory.path))

    async def _connect(self, session: Session, sel: Selection) -> tuple[Selection, dict[str, Secret]]:
        """Every connection at once, the secrets and what each image's tag names now meanwhile; an
        optional node that is off is left out."""
        reading = asyncio.ensure_future(self._secrets(sel.secrets_needed()))
        heads = asyncio.ensure_future(self._digests(sel))   # registry HEADs while SSH connects
        asking = asyncio.ensure_future(ask_revisions(self.project, sel, reading, self.world.revisions))  # the hub too
        try:
            skipped = await session.connect(sel.names)
            if len(skipped) == len(sel.names):
                raise RuntimeFailure("every selected node is optional and unreachable: nothing to do")
            secrets = await reading
            self.digests = await heads
            self.revisions = await asking
        finally:
            for task in (reading, heads, asking):
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        self.bus.emit("secrets", "ok", message=f"{len(secrets)} secrets read (values never shown)")
        if self.revisions.note():
            self.bus.emit("models", "info", message=str(self.revisions.note()))
        return sel.without(skipped), secrets

    async def _secrets(self, names: set[str]) -> dict[str, Secret]:
        given = self.world.secrets if self.world.secrets is not None else (self.first.secrets if self.first else None)
        if given is not None and names <= set(given):
            return {n: given[n] for n in names}
        return await self.source.read_async(names)

    async def _digests(self, sel: Selection) -> dict[str, str]:
        """What each image's tag names now (not with --skip-preflight: nothing was verified)."""
        if self.opts.skip_preflight:
            return {}
        return await current_digests(self.project, sorted({s.image for s in sel.selected_services()}))

    # ------------------------------------------------------------ lock, then look; plan

    async def _look(self, session: Session, sel: Selection, secrets: Mapping[str, Secret],
                    force: frozenset[str] = frozenset()) -> None:
        nodes = [n for n in sel.names if not force or n in force]
        then = self._preflight_commands(sel)
        mode: LockMode = "none" if self.opts.check else "auto"
        looks = {n: Look(self._request(sel, n, secrets), "force" if n in force else mode, then.get(n, ()))
                 for n in nodes}
        self.looks.update(looks)
        for name, state in (await session.look(looks)).items():
            if state.docker_error and sel.phases_of(name):
                user = self.project.inventory.node(name).ssh.user
                raise RuntimeFailure(f"{name}: docker is not usable by {user}: {state.docker_error}",
                                     hint="is dockerd running, and is the user in the docker group?")

    def _request(self, sel: Selection, node: str, secrets: Mapping[str, Secret]) -> LookRequest:
        scopes = sel.phases_of(node)
        network = (self.project.inventory.spec.network.name, self.project.inventory.spec.network.subnet)
        infra = [i for i in (infra_of(s.phase, network) for s in scopes) if i is not None]
        net = next((i.network[0] for i in infra if i.network), None)
        return LookRequest(deploy_root=self.project.inventory.node(node).deploy_root,
                           expected=expected_lines(sel.content(node, s.id, secrets) for s in scopes),
                           directories=tuple(dict.fromkeys(d for i in infra for d in i.directories)), network=net,
                           docker=any(sel.services_of(s.id, node) for s in scopes) or net is not None)

    def _plan(self, session: Session, sel: Selection, secrets: Mapping[str, Secret]) -> list[NodeChange]:
        network = (self.project.inventory.spec.network.name, self.project.inventory.spec.network.subnet)
        changes = [with_moved_images(plan_change(scope.phase, node, sel.services_of(scope.id, node.name),
                                                 sel.content(node.name, scope.id, secrets), session.states[node.name],
                                                 network), session.states[node.name], self.digests)
                   for scope in sel.phases for node in scope.nodes]
        return [with_moved_weights(c, session.states[c.node.name], self.revisions.commits) for c in changes]

    async def _repair(self, session: Session, sel: Selection, secrets: Mapping[str, Secret],
                      changes: list[NodeChange]) -> list[NodeChange]:
        """A node that saw nothing different, where we do (a container not running): lock it and look again."""
        drifted = frozenset(c.node.name for c in changes if c.changed and not session.states[c.node.name].lock.taken
                            and not session.states[c.node.name].lock.is_held_elsewhere)
        if not drifted:
            return changes
        await self._look(session, sel, secrets, force=drifted)
        return self._plan(session, sel, secrets)

    # ------------------------------------------------------------ preflight

    def _preflight_commands(self, sel: Selection) -> dict[str, tuple[cmd.Command, ...]]:
        """The preflight facts, asked in the look where a node takes the lock."""
        if self.opts.skip_preflight or self.opts.check:
            return {}
        requests = plan_requests(self.project, sel.preflight_scope())
        return {n: requests.commands(n) for n in sel.names}

    async def _preflight(self, session: Session, sel: Selection, moving: Sequence[NodeChange]) -> None:
        """The phases' checks on the nodes about to change; any failure stops before a change."""
        if self.opts.skip_preflight:
            self.bus.emit("preflight", "skipped", message="--skip-preflight")
            return
        scope = sel.preflight_scope(sorted({c.node.name for c in moving}))
        cache = local_state_dir() / "validated"
        self.pins = await check_deploy(self.project, scope, session.extra, bus=self.bus,
                                       coming=[s for c in moving for s in c.to_apply],
                                       validated=lambda: check_rendered(self.project, sel.fleet, cache_dir=cache))

    # ------------------------------------------------------------ the phases

    async def stage(self, session: Session, moving: Sequence[NodeChange], secrets: Mapping[str, Secret]) -> None:
        """Before a phase touches a node: what the changed services need that is not part of the
        release is in place — the weights of every service of the changing phases staged on its
        node and the revisions about to (re)start hashed (models/run.py); a missing or corrupt
        file stops the run, naming it, before any container changes."""
        services = [s for c in moving for s in self.revisions.staged(c.services, session.states[c.node.name].current)]
        self.weights = await before_deploy(self.project, session.fleet, self.bus, services,
                                           [n for c in moving for n in c.to_apply], secrets)

    async def _phases(self, session: Session, sel: Selection, changes: Sequence[NodeChange],
                      secrets: dict[str, Secret], result: DeployResult) -> None:
        runner = Runner(session.fleet, self.bus, run_id=session.ctx.run_id, by=self.opts.by, consul=self.consul,
                        pending=PendingStore(self.world.state_dir or local_state_dir(), self.project.inventory.fleet),
                        secrets=secrets, thermal={n.name: n.thermal_limit_c for n in sel.nodes if n.gpus},
                        interrupts=self.interrupts, network=self.network, inventory=self.project.inventory,
                        doors=rollout.doors_of(sel.services))
        ctx = Context(doors=rollout.doors_of(sel.services), by=self.opts.by, run_id=session.ctx.run_id, pins=self.pins, unlock=session.unlock_command,
                      keep_releases=self.project.inventory.spec.keep_releases, weights=self.weights,
                      services_of=lambda node: sel.fleet.nodes[node].services)
        last_phase = {c.node.name: c.phase.id for c in changes if c.changed}
        for scope in sel.phases:
            mine = [c for c in changes if c.phase.id == scope.id and c.changed]
            if not mine:
                continue
            work, releases = phase_work(scope, mine, session.states, last_phase, ctx)
            self.bus.emit("phase", "start", phase=scope.id, message=f"phase {scope.id} ({scope.phase.name}): "
                          + "; ".join(f"{c.node.name}: {c.summary()}" for c in mine))
            await runner.run_phase(work)
            result.changed[scope.id] = [w.node.name for w in work.nodes]
            for w in work.nodes:
                session.states[w.node.name] = releases[w.node.name].state_after(session.states[w.node.name])
                if releases[w.node.name].unlocks:
                    session.released(w.node.name)
                self.bus.emit("switch", "ok", host=w.node.name, phase=scope.id, message=f"current -> {w.release}",
                              release=w.release)

    # ------------------------------------------------------------ Consul, the record, the end

    async def _reconcile_consul(self, session: Session, sel: Selection, skip: set[int]) -> None:
        """Registrations Consul lost (it was recreated, a node rebooted) are put back; HTTP only."""
        services = [s for scope in sel.phases if scope.id not in skip for s in sel.phase_services(scope.id)
                    if s.node in session.states and s.name in session.states[s.node].applied]
        if not services:
            return
        releases = {n: s.current_id or "" for n, s in session.states.items()}
        try:
            for phase in sorted({s.phase for s in services}):
                await self.consul.register(phase, [s for s in services if s.phase == phase], releases)
        except SwarmError as exc:
            self.bus.emit("consul", "failed", message=f"could not check registrations: {exc.message}")
        self.consul.undo_log.clear()

    def _say_done(self, result: DeployResult) -> None:
        if result.changed:
            self.bus.emit("run", "ok", message=f"{len(result.changed_nodes)} node(s) on new releases, healthy")
        else:
            self.bus.emit("run", "unchanged", message="nothing to change: every node runs what is wanted")

    def _remember(self, session: Session, whole: Selection, secrets: Mapping[str, Secret]) -> None:
        """Leave the record the next run's first question asks (best effort): every node of the
        selection, an optional one that was off included (the next run asks it again)."""
        if self.cache is None or self.key is None or self.revisions.failed:   # (no hub answer: ask again)
            return
        requests = {n: self.looks[n].request if n in self.looks else self._request(whole, n, secrets)
                    for n in whole.names}
        try:
            record = plan_record(self.key, session, whole, requests, secrets, self.source, self.consul)
            registry = self.project.inventory.spec.registry
            record.images = dict(self.digests)
            record.weights, record.hub = self.revisions.keys(), str(self.project.inventory.spec.models.hub)
            record.insecure = [registry.mirror] if registry.mirror and registry.insecure else []
            self.cache.save(record)
        except (OSError, SwarmError) as exc:
            self.bus.emit("run", "info", message=f"plan record not written: {exc}")

    def _finish(self, result: DeployResult, session: Session, sel: Selection) -> DeployResult:
        for node in sel.nodes:
            state = session.states.get(node.name)
            result.releases[node.name] = (state.current_id if state else None) or ""
            if node.name not in result.changed_nodes:
                result.unchanged.append(node.name)
        result.stats = dict(session.fleet.stats())
        return result


async def ask_revisions(project: Project, sel: Selection, reading: asyncio.Future[dict[str, Secret]],
                        given: Resolution | None) -> Resolution:
    """Which commit each moving weights revision (`main`) names now (the hub token is a secret;
    `given`: a test's answers, engine/context.Boundaries)."""
    pins = moving_pins(sel.selected_services())
    if not pins or given is not None:
        return given or Resolution()
    try:
        secrets = await asyncio.shield(reading)
    except Exception:  # noqa: BLE001 - the run reports the secrets' own failure; nothing to ask
        return Resolution()
    return await ask_hub(hub_client(project, secrets.get(project.inventory.spec.models.token_secret)), pins)


def applied_first(session: Session) -> Callable[[str], tuple[Sequence[cmd.Command], bytes | None]]:
    """Before a lock the deploy still holds is released: a release without its applied lines gets them."""
    def last(name: str) -> tuple[Sequence[cmd.Command], bytes | None]:
        state = session.states.get(name)
        if state is None or state.current is None:
            return (), None
        return (cmd.write_file(f"{session.roots[name]}/current/{cmd.APPLIED_FILE}", 0o644),), applied_lines(state.applied)
    return last
