"""Deploy a phase: every node of it ends on a healthy new release or back on its previous one.

Runbook, per run (design.md):
  render the phase's nodes -> read secrets from Vault -> connect (parallel) -> one facts
  command per node -> nothing changed? done -> lock the changed nodes -> upload + apply
  (one command per node) -> health gate -> register in Consul -> switch `current`, audit,
  prune, unlock.  A failed step or gate on any node brings every node that moved back to
  its previous release, gates that again, and exits 1 (3 if the rollback itself fails).
"""

from __future__ import annotations

import asyncio
import difflib
import getpass
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import commands as cmd
from orchestrator.clients.secrets_source import SecretSource
from orchestrator.config.inventory import Node
from orchestrator.config.playbook import Phase
from orchestrator.config.project import Project
from orchestrator.engine.consul import ConsulSync
from orchestrator.engine.gate import Gate
from orchestrator.errors import (
    InputError,
    LockHeld,
    PhaseFailed,
    RollbackFailed,
    RuntimeFailure,
    SwarmError,
)
from orchestrator.events import EventBus
from orchestrator.facts.containers import parse_containers, published_ports
from orchestrator.render.fleet import FleetRender, NodeRender, render_fleet
from orchestrator.render.release import (
    NodeState,
    ReleaseContent,
    build_release,
    manifest,
    parse_release_json,
    parse_releases,
    tarball,
)
from orchestrator.render.services import Service
from orchestrator.secrets import MASK, Secret, scrub
from orchestrator.transport.base import Transport
from orchestrator.transport.recording import RecordingTransport
from orchestrator.transport.ssh import DEFAULT_FORKS, SshTarget, SshTransport


def whoami() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class Options:
    phase: int
    limit: str | None = None
    check: bool = False
    diff: bool = False
    forks: int = DEFAULT_FORKS
    skip_preflight: bool = False
    by: str = field(default_factory=whoami)


@dataclass
class NodePlan:
    """What this run will do on one node."""

    node: Node
    render: NodeRender
    content: ReleaseContent
    state: NodeState
    services: list[Service]          # the phase's services on this node
    to_apply: list[str]              # service names compose will bring up
    adopted: list[str]               # protected services found running: never touched
    infra_missing: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.to_apply) or self.infra_missing or self._adoption_only

    @property
    def _adoption_only(self) -> bool:
        return bool(self.adopted) and any(s not in self.state.applied for s in self.adopted)

    @property
    def release_dir(self) -> str:
        return f"releases/{self.content.id}"

    @property
    def compose_file(self) -> str:
        return f"{self.node.deploy_root}/{self.release_dir}/compose.yml"


@dataclass
class DeployResult:
    phase: int
    changed: list[str]
    unchanged: list[str]
    releases: dict[str, str]
    check_report: list[str] = field(default_factory=list)


def ssh_target(project: Project, node: Node) -> SshTarget:
    inv = project.inventory
    key = inv.resolve_path(node.ssh.key)
    known = inv.resolve_path(node.ssh.known_hosts)
    if key is not None and not key.is_file():
        raise InputError(f"SSH key {key} for {node.name} does not exist",
                         file=str(inv.path), hint="set ssh.key in the inventory to your private key")
    return SshTarget(name=node.name, address=node.address, port=node.ssh.port, user=node.ssh.user,
                     key=key, known_hosts=known, connect_timeout=node.ssh.connect_timeout,
                     command_timeout=node.ssh.command_timeout)


def open_transports(project: Project, nodes: list[Node], check: bool) -> dict[str, Transport]:
    transports: dict[str, Transport] = {}
    for node in nodes:
        real: Transport = SshTransport(ssh_target(project, node))
        transports[node.name] = RecordingTransport(real) if check else real
    return transports


async def connect_all(transports: Mapping[str, Transport], bus: EventBus, phase: int | None,
                      forks: int = DEFAULT_FORKS) -> None:
    """Open every connection in parallel; any failure stops the run before anything changed."""
    gate = asyncio.Semaphore(forks)

    async def one(name: str, t: Transport) -> None:
        async with gate:
            connect = getattr(t, "connect", None) or getattr(getattr(t, "inner", None), "connect", None)
            if connect is not None:
                await connect()
            bus.emit("connect", "ok", host=name, phase=phase)

    results = await asyncio.gather(*(one(n, t) for n, t in transports.items()), return_exceptions=True)
    failures = [(n, r) for n, r in zip(transports, results, strict=True) if isinstance(r, BaseException)]
    for name, exc in failures:
        bus.emit("connect", "failed", host=name, phase=phase, message=str(exc))
    if failures:
        first = failures[0][1]
        if isinstance(first, SwarmError):
            raise first
        raise RuntimeFailure(f"{failures[0][0]}: cannot connect: {first}")


class Deployer:
    def __init__(self, project: Project, options: Options, bus: EventBus,
                 secret_source: SecretSource | None = None) -> None:
        self.project = project
        self.opts = options
        self.bus = bus
        self.secrets = secret_source or SecretSource.from_project(project)
        self.phase: Phase = project.playbook.phase(options.phase)
        self.transports: dict[str, Transport] = {}
        self._infra_missing: dict[str, bool] = {}
        self._pins: dict[str, str] = {}
        self.consul = ConsulSync.from_project(project, bus)

    # ------------------------------------------------------------ entry

    async def run(self) -> DeployResult:
        if self.phase.kind == "preflight":
            raise InputError(f"phase {self.phase.id} ({self.phase.name}) is validation: run `swarm preflight`")
        nodes = self._nodes()
        self.bus.emit("run", "start", phase=self.phase.id,
                      message=f"phase {self.phase.id} ({self.phase.name}) on {', '.join(n.name for n in nodes)}"
                      + (" [check]" if self.opts.check else ""))
        fleet = render_fleet(self.project, [n.name for n in nodes], for_node=True)
        secrets = self._read_secrets(fleet)
        self.transports = open_transports(self.project, nodes, self.opts.check)
        try:
            await connect_all(self.transports, self.bus, self.phase.id, self.opts.forks)
            plans = await self._plan_nodes(nodes, fleet, secrets)
            if self.opts.check:
                return await self._report_check(plans)
            return await self._apply(plans, secrets)
        finally:
            await asyncio.gather(*(t.close() for t in self.transports.values()), return_exceptions=True)

    def _nodes(self) -> list[Node]:
        inv = self.project.inventory
        chosen = {n.name for n in inv.select(self.opts.limit)}
        nodes = [inv.node(h) for h in self.phase.hosts if h in chosen]
        if not nodes:
            raise InputError(f"--limit {self.opts.limit!r} matches no host of phase {self.phase.id} "
                             f"(its hosts: {', '.join(self.phase.hosts)})")
        return nodes

    def _read_secrets(self, fleet: FleetRender) -> dict[str, Secret]:
        needed = self.secrets.names_for(s for s in fleet.all_services() if s.phase == self.phase.id)
        if not needed:
            return {}
        self.bus.emit("secrets", "start", phase=self.phase.id, message=f"reading {len(needed)} secrets from Vault")
        values = self.secrets.read(needed)
        self.bus.emit("secrets", "ok", phase=self.phase.id, message=f"{len(values)} secrets read (values never shown)")
        return values

    # ------------------------------------------------------------ facts + plan

    async def _plan_nodes(self, nodes: list[Node], fleet: FleetRender,
                          secrets: dict[str, Secret]) -> list[NodePlan]:
        states = await asyncio.gather(*(self._facts(n) for n in nodes))
        plans = [self._plan_node(n, fleet.nodes[n.name], s, secrets) for n, s in zip(nodes, states, strict=True)]
        for plan in plans:
            self._refuse_protected_changes(plan)
        return plans

    async def _facts(self, node: Node) -> NodeState:
        """The one command a no-op run costs: current release, releases, containers.

        Docker is only asked about when the phase runs services on the node or creates the
        fleet network, so a phase of plain directories works on SSH-only machines.
        """
        root = node.deploy_root
        infra = self.phase.spec.infrastructure if self.phase.kind == "infrastructure" else None
        wants_docker = bool(self.phase.services_on(node.name)) or bool(infra and infra.network)
        steps = [cmd.read_file(f"{root}/current/release.json"), cmd.list_releases(root)]
        if wants_docker:
            steps.append(cmd.docker_ps_all())
        if infra is not None:
            network = self.project.inventory.spec.network.name if infra.network else None
            steps.append(cmd.infra_ready(root, network, ["releases", *infra.directories]))
        result = await self.transports[node.name].run(cmd.Script.of(*steps, stop_on_error=False), check=False)
        if not result.steps or result.steps[0].exit_status is None:
            raise RuntimeFailure(f"{node.name}: could not read the node's state: {result.stderr.strip()[:200]}")
        containers: tuple[dict[str, Any], ...] = ()
        if wants_docker:
            docker = result.steps[2]
            if not docker.ok:
                raise RuntimeFailure(
                    f"{node.name}: docker is not usable by {node.ssh.user}: {docker.stderr.strip()[:200]}",
                    hint="is dockerd running, and is the user in the docker group?")
            containers = parse_containers(docker.stdout)
        state = NodeState(
            node=node.name,
            current=parse_release_json(cmd.parse_read_file(result.steps[0].stdout), node.name),
            releases=parse_releases(result.steps[1].stdout),
            containers=containers,
        )
        self._infra_missing[node.name] = infra is not None and result.steps[-1].stdout.strip() != "ready"
        self.bus.emit("facts", "ok", host=node.name, phase=self.phase.id,
                      message=f"current {state.current_id or 'none'}")
        return state

    def _plan_node(self, node: Node, render: NodeRender, state: NodeState,
                   secrets: dict[str, Secret]) -> NodePlan:
        services = [s for s in render.services if s.phase == self.phase.id]
        content = build_release(render, secrets, only={s.name for s in services})
        applied = state.applied
        to_apply, adopted = [], []
        for svc in services:
            if svc.protected and self._protected_running(state, svc):
                adopted.append(svc.name)
            elif applied.get(svc.name) != content.service_hashes[svc.name]:
                to_apply.append(svc.name)
        return NodePlan(node=node, render=render, content=content, state=state, services=services,
                        to_apply=to_apply, adopted=adopted,
                        infra_missing=self._infra_missing.get(node.name, False))

    @staticmethod
    def _protected_running(state: NodeState, svc: Service) -> bool:
        if state.container_of(svc.name) is not None:
            return True
        wanted = {p.port for p in svc.ports}
        return any(wanted & published_ports(c) for c in state.containers)

    def _refuse_protected_changes(self, plan: NodePlan) -> None:
        for name in plan.adopted:
            old = plan.state.applied.get(name)
            new = plan.content.service_hashes[name]
            if old is not None and old != new:
                raise InputError(
                    f"{name} on {plan.node.name} is protected and its definition changed "
                    f"({old} -> {new}): swarm never recreates it, so the deploy stops before touching any node",
                    hint="revert the change to its role/vars, or recreate it by hand and remove it from "
                         f"nodes.{plan.node.name}.protected for one deploy")

    # ------------------------------------------------------------ --check

    async def _report_check(self, plans: list[NodePlan]) -> DeployResult:
        report: list[str] = []
        for plan in plans:
            if not plan.changed:
                report.append(f"{plan.node.name}: no changes (release {plan.state.current_id})")
                self.bus.emit("check", "unchanged", host=plan.node.name, phase=self.phase.id)
                continue
            what = ", ".join(plan.to_apply) or ("infrastructure" if plan.infra_missing else "adopt protected")
            report.append(f"{plan.node.name}: would deploy release {plan.content.id}: {what}")
            self.bus.emit("check", "changed", host=plan.node.name, phase=self.phase.id, message=f"would apply {what}")
            if self.opts.diff:
                report.extend(await self._diff(plan))
        changed = [p.node.name for p in plans if p.changed]
        self.bus.emit("run", "ok", phase=self.phase.id,
                      message=f"check: {len(changed)} node(s) would change, nothing was modified")
        return DeployResult(self.phase.id, changed, [p.node.name for p in plans if not p.changed], {}, report)

    async def _diff(self, plan: NodePlan) -> list[str]:
        old: dict[str, str] = {}
        if plan.state.current_id:
            root = f"{plan.node.deploy_root}/current"
            paths = sorted(plan.content.files)
            result = await self.transports[plan.node.name].run(
                cmd.Script.of(*(cmd.read_file(f"{root}/{p}") for p in paths), stop_on_error=False), check=False)
            for path, step in zip(paths, result.steps, strict=False):
                body = cmd.parse_read_file(step.stdout) if step.ok else None
                if body is not None:
                    old[path] = body
        lines: list[str] = []
        for path, data in plan.content.files.items():
            new = data.decode()
            before = old.get(path, "")
            if path.startswith("env/"):
                new, before = mask_env(new), mask_env(before)
            if new != before:
                lines.extend(difflib.unified_diff(before.splitlines(), new.splitlines(),
                                                  f"{plan.node.name}:current/{path}",
                                                  f"{plan.node.name}:new/{path}", lineterm=""))
        return [scrub(line) for line in lines]

    # ------------------------------------------------------------ apply

    async def _apply(self, plans: list[NodePlan], secrets: dict[str, Secret]) -> DeployResult:
        changed = [p for p in plans if p.changed]
        unchanged = [p for p in plans if not p.changed]
        for p in unchanged:
            self.bus.emit("node", "unchanged", host=p.node.name, phase=self.phase.id,
                          message=f"release {p.state.current_id} already applied")
        if not changed:
            await self._reconcile_consul(plans)
            self.bus.emit("run", "unchanged", phase=self.phase.id, message=f"phase {self.phase.id}: no changes")
            return DeployResult(self.phase.id, [], [p.node.name for p in plans],
                                {p.node.name: p.state.current_id or "" for p in plans})
        await self._preflight(changed)
        await self._lock(changed)
        moved: list[NodePlan] = []
        try:
            await self._upload_and_up(changed, moved)
            await self._gate(changed, secrets)
            await self.consul.register(self.phase.id, [s for p in changed for s in p.services],
                                       {p.node.name: p.content.id for p in changed})
            await self._finish(changed)
        except SwarmError as failure:
            if isinstance(failure, LockHeld):
                raise
            await self._roll_back(moved, failure, secrets)
            raise PhaseFailed(
                f"phase {self.phase.id} failed and was rolled back: {failure.message}",
                hint=failure.hint) from None
        except (asyncio.CancelledError, KeyboardInterrupt):
            # Interrupted (Ctrl-C, SIGTERM): never leave the phase half deployed.
            await self._roll_back(moved, RuntimeFailure("interrupted by the operator"), secrets)
            raise PhaseFailed(f"phase {self.phase.id} was interrupted and rolled back") from None
        finally:
            await self._unlock(changed)
        self.bus.emit("run", "ok", phase=self.phase.id,
                      message=f"phase {self.phase.id}: {len(changed)} node(s) on new releases, healthy")
        return DeployResult(self.phase.id, [p.node.name for p in changed], [p.node.name for p in unchanged],
                            {p.node.name: p.content.id for p in changed}
                            | {p.node.name: p.state.current_id or "" for p in unchanged})

    async def _reconcile_consul(self, plans: list[NodePlan]) -> None:
        """Nothing to deploy, but Consul may have lost registrations (e.g. recreated): put them back.

        Local HTTP to Consul only — a no-op run still costs one SSH command per node.
        """
        services = [s for p in plans for s in p.services if s.name in p.state.applied]
        try:
            await self.consul.register(self.phase.id, services,
                                       {p.node.name: p.state.current_id or "" for p in plans})
        except SwarmError as exc:
            self.bus.emit("consul", "failed", phase=self.phase.id,
                          message=f"could not check registrations: {exc.message}")
        self.consul.undo_log.clear()

    # ------------------------------------------------------------ preflight

    async def _preflight(self, plans: list[NodePlan]) -> None:
        """The phase's preflight checks on the nodes about to change, over the open connections."""
        if self.opts.skip_preflight:
            self.bus.emit("preflight", "skipped", phase=self.phase.id, message="--skip-preflight")
            return
        from orchestrator.preflight.run import gate_phase, require_passed

        report = await gate_phase(self.project, self.phase.id, [p.node for p in plans], self.transports, self.bus)
        require_passed(report)
        self._pins = dict(report.pins)
        self.bus.emit("preflight", "ok", phase=self.phase.id,
                      message=f"{len(report.results)} checks passed ({len(report.warned)} warnings)")

    # ------------------------------------------------------------ lock

    def _holder(self) -> bytes:
        return json.dumps({"by": self.opts.by, "pid": os.getpid(), "phase": self.phase.id,
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()

    async def _lock(self, plans: list[NodePlan]) -> None:
        results = await asyncio.gather(*(self._lock_one(p) for p in plans), return_exceptions=True)
        held = [(p, r) for p, r in zip(plans, results, strict=True) if isinstance(r, BaseException)]
        if not held:
            return
        got = [p for p, r in zip(plans, results, strict=True) if not isinstance(r, BaseException)]
        await self._unlock(got)
        plan, exc = held[0]
        if isinstance(exc, SwarmError):
            raise exc
        raise RuntimeFailure(f"{plan.node.name}: cannot take the deploy lock: {exc}")

    async def _lock_one(self, plan: NodePlan) -> None:
        lock_dir = f"{plan.node.deploy_root}/.lock"
        result = await self.transports[plan.node.name].run(cmd.lock_acquire(lock_dir), input=self._holder(),
                                                          check=False)
        if result.exit_status == cmd.LOCK_HELD_EXIT:
            raise LockHeld(f"{plan.node.name}: another deploy holds the lock: {describe_holder(result.stdout)}",
                           hint=f"wait for it to finish; if it died, break the lock with "
                                f"`swarm unlock --limit {plan.node.name}`")
        if not result.ok:
            raise RuntimeFailure(f"{plan.node.name}: cannot take the deploy lock in {lock_dir}: "
                                 f"{result.stderr.strip()[:200]}",
                                 hint=f"can {plan.node.ssh.user} write to {plan.node.deploy_root}?")
        self.bus.emit("lock", "ok", host=plan.node.name, phase=self.phase.id, message="lock taken")

    async def _unlock(self, plans: list[NodePlan]) -> None:
        await asyncio.gather(*(self.transports[p.node.name].run(cmd.lock_release(f"{p.node.deploy_root}/.lock"),
                                                                 check=False) for p in plans),
                             return_exceptions=True)

    # ------------------------------------------------------------ upload + compose up

    async def _upload_and_up(self, plans: list[NodePlan], moved: list[NodePlan]) -> None:
        results = await asyncio.gather(*(self._upload_and_up_one(p, moved) for p in plans), return_exceptions=True)
        for plan, r in zip(plans, results, strict=True):
            if isinstance(r, BaseException):
                if isinstance(r, SwarmError):
                    raise r
                raise RuntimeFailure(f"{plan.node.name}: {type(r).__name__}: {r}")

    async def _upload_and_up_one(self, plan: NodePlan, moved: list[NodePlan]) -> None:
        node, content = plan.node, plan.content
        applied = dict(plan.state.applied)
        applied.update({s.name: content.service_hashes[s.name] for s in plan.services})
        release_json = manifest(content, phase=self.phase.id, applied=applied, by=self.opts.by,
                                previous=plan.state.current_id)
        # The digests preflight checked for this node's platform, per service (what verify compares).
        release_json["images"] = {s.name: self._pins[s.image] for s in plan.services if s.image in self._pins}
        tmp = f"releases/.tmp-{content.id}"
        data = tarball(content, tmp, release_json)
        steps: list[cmd.Command] = [cmd.extract_release(node.deploy_root, tmp, plan.release_dir)]
        if plan.state.current_id:
            steps.append(cmd.carry_env_files(f"{node.deploy_root}/current", f"{node.deploy_root}/{plan.release_dir}"))
        if self.phase.kind == "infrastructure":
            infra = self.phase.spec.infrastructure
            dirs = [f"{node.deploy_root}/{d}" for d in infra.directories]
            steps.append(cmd.mkdir_p(*dirs))
            if infra.network:
                net = self.project.inventory.spec.network
                steps.append(cmd.network_create(net.name, net.subnet))
        if plan.to_apply:
            steps.append(cmd.compose_up(node.project, plan.compose_file, plan.to_apply))
        self.bus.emit("apply", "start", host=node.name, phase=self.phase.id,
                      message=f"release {content.id}: {', '.join(plan.to_apply) or 'infrastructure'}")
        moved.append(plan)
        await self.transports[node.name].run(cmd.Script.of(*steps), input=data)
        self.bus.emit("apply", "changed", host=node.name, phase=self.phase.id,
                      message=f"up: {', '.join(plan.to_apply) or '-'}", release=content.id)

    # ------------------------------------------------------------ gate

    async def _gate(self, plans: list[NodePlan], secrets: Mapping[str, Secret]) -> None:
        services = [s for p in plans for s in p.services]
        if not services:
            return
        self.bus.emit("gate", "start", phase=self.phase.id,
                      message=f"waiting for {len(services)} services to be healthy")
        await self._gate_services(plans, services, {p.node.name: p.compose_file for p in plans}, secrets)

    async def _gate_services(self, plans: list[NodePlan], services: list[Service],
                             compose_files: dict[str, str], secrets: Mapping[str, Secret]) -> None:
        limits = {p.node.name: p.node.thermal_limit_c for p in plans if p.node.gpus}
        gate = Gate(services=services, transports=self.transports, compose_files=compose_files,
                    spec=self.phase.spec.gate, secrets=secrets, thermal_limits=limits, bus=self.bus,
                    phase=self.phase.id)
        await gate.run()

    # ------------------------------------------------------------ finish

    async def _finish(self, plans: list[NodePlan]) -> None:
        await asyncio.gather(*(self._finish_one(p) for p in plans))

    async def _finish_one(self, plan: NodePlan) -> None:
        node, content = plan.node, plan.content
        keep = self.project.inventory.spec.keep_releases
        old = [r for r in plan.state.releases if r != content.id]
        prune = old[: max(0, len(old) - (keep - 1))]
        audit = audit_line(node.name, "deploy", self.phase.id, self.opts.by, release=content.id,
                           previous=plan.state.current_id, services=plan.to_apply, adopted=plan.adopted)
        steps = [cmd.switch_symlink(plan.release_dir, f"{node.deploy_root}/current"),
                 cmd.append_file(f"{node.deploy_root}/audit.log")]
        if prune:  # same round trip: pruning is last, so its failure cannot undo the switch
            steps.append(cmd.remove_releases(node.deploy_root, prune))
        await self.transports[node.name].run(cmd.Script.of(*steps), input=audit)
        self.bus.emit("switch", "changed", host=node.name, phase=self.phase.id,
                      message=f"current -> {content.id}", release=content.id)
        if prune:
            self.bus.emit("prune", "changed", host=node.name, phase=self.phase.id,
                          message=f"removed {len(prune)} old release(s)")

    # ------------------------------------------------------------ rollback

    async def _roll_back(self, moved: list[NodePlan], failure: SwarmError,
                         secrets: Mapping[str, Secret]) -> None:
        self.bus.emit("rollback", "start", phase=self.phase.id,
                      message=f"{failure.message}; rolling back {', '.join(p.node.name for p in moved) or 'nothing'}")
        await self.consul.undo()
        if not moved:
            return
        results = await asyncio.gather(*(self._restore_one(p) for p in moved), return_exceptions=True)
        broken = [(p, r) for p, r in zip(moved, results, strict=True) if isinstance(r, BaseException)]
        if broken:
            plan, exc = broken[0]
            raise RollbackFailed(f"rollback failed on {plan.node.name}: {exc}",
                                 hint=f"inspect {plan.node.name} by hand: docker compose -p {plan.node.project} ps")
        restored = [(p, svc) for p in moved if p.state.current_id
                    for svc in p.services if svc.name in self._previous_services(p)]
        if restored:
            prev_files = {p.node.name: f"{p.node.deploy_root}/releases/{p.state.current_id}/compose.yml"
                          for p in moved if p.state.current_id}
            prev_services = [self._previous_service(p, svc) for p, svc in restored]
            try:
                await self._gate_services(moved, prev_services, prev_files, secrets)
            except SwarmError as exc:
                raise RollbackFailed(f"rolled back, but the previous release is not healthy: {exc.message}",
                                     hint="fix the node by hand, then `swarm rollback --to RELEASE`") from None
        for plan in moved:
            audit = audit_line(plan.node.name, "rollback", self.phase.id, self.opts.by,
                               release=plan.state.current_id, failed=plan.content.id, reason=failure.message)
            await self.transports[plan.node.name].run(cmd.append_file(f"{plan.node.deploy_root}/audit.log"),
                                                      input=audit, check=False)
            self.bus.emit("rollback", "rolled-back", host=plan.node.name, phase=self.phase.id,
                          message=f"back on {plan.state.current_id or 'nothing (first deploy)'}",
                          failed_release=plan.content.id)

    def _previous_services(self, plan: NodePlan) -> set[str]:
        return set(plan.state.applied)

    def _previous_service(self, plan: NodePlan, svc: Service) -> Service:
        return svc  # probes are the same; compose ps reads the previous project file

    async def _restore_one(self, plan: NodePlan) -> None:
        node = plan.node
        prev = plan.state.current_id
        phase_names = [s.name for s in plan.services]
        steps: list[cmd.Command] = []
        if prev:
            prev_file = f"{node.deploy_root}/releases/{prev}/compose.yml"
            back = [n for n in phase_names if n in plan.state.applied and n not in plan.adopted]
            gone = [n for n in plan.to_apply if n not in plan.state.applied]
            if gone:
                steps.append(cmd.compose_remove(node.project, plan.compose_file, gone))
            if back:
                steps.append(cmd.compose_up(node.project, prev_file, back))
        elif plan.to_apply:
            steps.append(cmd.compose_remove(node.project, plan.compose_file, plan.to_apply))
        if steps:
            await self.transports[node.name].run(cmd.Script.of(*steps))
        self.bus.emit("rollback", "changed", host=node.name, phase=self.phase.id,
                      message=f"restored {prev or 'empty'} for {', '.join(phase_names)}")


def describe_holder(stdout: str) -> str:
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        return stdout.strip()[:200] or "unknown holder"
    return f"{data.get('by', '?')} (pid {data.get('pid', '?')}, phase {data.get('phase', '?')}, since {data.get('since', '?')})"


def audit_line(node: str, action: str, phase: int | None, by: str, **data: Any) -> bytes:
    record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "node": node, "action": action,
              "phase": phase, "by": by, **data}
    return (scrub(json.dumps(record, sort_keys=True, default=str)) + "\n").encode()


def mask_env(text: str) -> str:
    """KEY='value' -> KEY=******** for --diff: names show, values never."""
    out = []
    for line in text.splitlines():
        key, sep, _ = line.partition("=")
        out.append(f"{key}={MASK}" if sep and not line.startswith("#") else line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def local_state_dir() -> Path:
    return Path(os.environ.get("SWARM_STATE_DIR", Path.home() / ".local/state/swarm"))
