"""The health gate: healthy means it came up and stayed up (Nomad's update block, plus docker's view).

Every probe of every gated service must pass and stay passing for `min_healthy_time`,
within `healthy_deadline` (a role may lengthen it: vLLM cold starts take minutes). HTTP
and TCP probes run from the controller against the node's address. Each round also
costs one command per node that reads its containers as docker sees them (state, restart
count, start time, compose health) and, on GPU nodes, the GPU temperatures.

The gate fails at once — not at the deadline — when a container exited, is restarting,
restarted or was replaced while watched (its restart count or start time changed), a
fresh container had already restarted, compose health says `unhealthy`, a GPU is at its
thermal limit, or the node stopped answering. A service that is running and still
loading (compose health `starting`, probes refused: a vLLM reading its weights) is not
failed early: its deadline holds. A failure names the service, the node, why, and the
container's last log lines (secrets scrubbed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from orchestrator import commands as cmd
from orchestrator.commands import Command, Script
from orchestrator.config.playbook import GateSpec
from orchestrator.engine.reach import probe_target
from orchestrator.engine.signals import Interrupts
from orchestrator.errors import RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.gpu import NVIDIA_SMI_QUERY, GpuReading, parse_nvidia_smi
from orchestrator.facts.probes import Outcome, ProbeNetwork, describe_probe, http_probe, tcp_probe
from orchestrator.facts.states import ContainerState, parse_container_states
from orchestrator.render.services import Probe, Service
from orchestrator.secrets import Secret, scrub
from orchestrator.transport.base import Transport

MAX_SLEEP = 5.0
NODE_READ_TIMEOUT = 30.0
LOG_LINES = 20
SHOWN_LOG_LINES = 6


class GateFailed(RuntimeFailure):
    def __init__(self, service: str, node: str, probe: str, answer: str, waited: float,
                 *, logs: Sequence[str] = (), at_once: bool = False) -> None:
        lead = f"health gate failed: {service} on {node}: {probe}"
        how = f"{answer} (after {waited:.0f}s{', without waiting for the deadline' if at_once else ''})"
        message = f"{lead} — {how}" if at_once else f"{lead} — last answer: {how}"
        if logs:
            message += "\n  last log lines:\n    " + "\n    ".join(scrub(line) for line in logs)
        super().__init__(
            message,
            hint=f"look at the service's logs on {node}: docker compose -p swarm-{node} logs {service}",
        )
        self.service, self.node, self.probe, self.answer = service, node, probe, answer
        self.at_once = at_once


class NodeUnreachable(RuntimeFailure):
    """A node stopped answering during the gate (dead link, sshd gone)."""

    def __init__(self, node: str, detail: str) -> None:
        super().__init__(f"{node} is unreachable: {detail}")
        self.node = node


@dataclass
class NodeView:
    """What one round's command saw on a node."""

    containers: dict[str, ContainerState] = field(default_factory=dict)
    gpus: tuple[GpuReading, ...] = ()
    error: str | None = None
    unreachable: bool = False


def compose_outcome(container: ContainerState | None, svc: Service) -> Outcome:
    """The container as docker sees it: running, and healthy when the image has a healthcheck."""
    name = "compose health"
    if container is None:
        return Outcome(False, name, "no container")
    if container.status != "running":
        return Outcome(False, name, f"container {container.status}")
    if svc.has_healthcheck and container.health != "healthy":
        return Outcome(False, name, f"container running, health {container.health or 'unknown'}")
    return Outcome(True, name, f"running{', healthy' if container.health == 'healthy' else ''}")


def crash_reason(container: ContainerState | None, baseline: ContainerState | None,
                 fresh_since: float | None) -> str | None:
    """Why a watched container has already failed, or None while it may still come up."""
    if container is None:
        return "no container: compose did not create it, or it was removed"
    if container.status in ("exited", "dead"):
        return f"container exited with code {container.exit_code}"
    if container.restarting or container.status == "restarting":
        return f"container is restarting (crash loop, {container.restarts} restarts)"
    if container.health == "unhealthy":
        return "compose health: unhealthy"
    if baseline is None:
        fresh = fresh_since is not None and container.created is not None and container.created >= fresh_since
        if fresh and container.restarts > 0:
            return f"container restarted {container.restarts} time(s) since it was created"
        return None
    if container.id != baseline.id:
        return "container was replaced while the gate watched it"
    if container.restarts > baseline.restarts or container.started != baseline.started:
        return (f"container restarted while the gate watched it "
                f"({container.restarts - baseline.restarts} time(s))")
    return None


@dataclass
class Watch:
    service: Service
    deadline: float
    min_healthy: float
    fresh_since: float | None = None        # node epoch: containers newer than this are this run's
    baseline: ContainerState | None = None
    passing_since: float | None = None
    done: bool = False
    last: Outcome | None = None
    state: str = "starting"


@dataclass(frozen=True)
class GateTarget:
    """One node's part of a gate: where it is and what was started there when."""

    transport: Transport
    project: str
    thermal_limit: float | None = None
    fresh_since: float | None = None         # node time the apply step started (None: unknown)


class Gate:
    """Waits until every watched service is healthy long enough, or fails as soon as one cannot be."""

    def __init__(self, *, services: Sequence[Service], targets: Mapping[str, GateTarget],
                 spec: GateSpec, secrets: Mapping[str, Secret], bus: EventBus, phase: int,
                 hold_cap: float | None = None, what: str = "gate",
                 interrupts: Interrupts | None = None, unwinding: bool = False,
                 network: ProbeNetwork | None = None, max_sleep: float = MAX_SLEEP) -> None:
        self.services = list(services)
        self.targets = targets
        self.spec = spec
        self.secrets = secrets
        self.bus = bus
        self.phase = phase
        self.hold_cap = hold_cap    # restoring a release that was healthy: a short hold only
        self.what = what
        self.interrupts = interrupts or Interrupts()
        self.unwinding = unwinding  # a restore gate: only a second signal stops it
        self.network = network or ProbeNetwork()
        self.max_sleep = max_sleep  # a swap that holds requests looks more often (engine/rollout.py)
        self.started = time.monotonic()

    async def run(self) -> None:
        if not self.services:
            return
        self.started = time.monotonic()
        watches = [self._watch(s) for s in self.services]
        sleep = self.spec.poll_interval
        async with self.network.client() as client:
            while True:
                self.interrupts.check(unwinding=self.unwinding)
                views = await self._node_views()
                self._check_nodes(views)
                self._check_heat(views)
                now = time.monotonic()
                pending = [w for w in watches if not w.done]
                await asyncio.gather(*(self._evaluate(w, client, views, now) for w in pending))
                await self._fail_crashed(watches, views)  # healthy ones too: stayed up
                self._progress(watches, time.monotonic())
                if all(w.done for w in watches):
                    return
                self._check_deadlines(watches, time.monotonic())
                await self.interrupts.sleep(self._next_look(watches, sleep), unwinding=self.unwinding)
                sleep = min(self.max_sleep, sleep * 1.5)

    def _next_look(self, watches: Sequence[Watch], backoff: float) -> float:
        """The back-off, but no later than the moment a passing service's hold is over: a 2 s
        hold is declared after ~2 s, not at the next 5 s poll."""
        now = time.monotonic()
        ends = [w.passing_since + w.min_healthy - now for w in watches if not w.done and w.passing_since is not None]
        return max(self.spec.poll_interval, min([backoff, *ends])) if ends else backoff

    def _watch(self, svc: Service) -> Watch:
        if svc.vars.get("healthy_deadline") is not None and not self.unwinding:  # set on the instance
            deadline = svc.healthy_deadline or 0.0
        else:  # a role may lengthen the phase's deadline (cold starts), never shorten it; a
            # restore gate brings back the *previous* release, which the new instance setting
            # (often a short deadline staged for the new one) does not describe
            deadline = max(self.spec.healthy_deadline, svc.healthy_deadline or 0.0)
        hold = svc.min_healthy_time if svc.min_healthy_time is not None else self.spec.min_healthy_time
        if self.hold_cap is not None:
            hold = min(hold, self.hold_cap)
        target = self.targets[svc.node]
        return Watch(service=svc, deadline=self.started + deadline, min_healthy=hold,
                     fresh_since=target.fresh_since)

    # ------------------------------------------------------------ node reads

    async def _node_views(self) -> dict[str, NodeView]:
        nodes = sorted({s.node for s in self.services})
        results = await asyncio.gather(*(self._node_view(n) for n in nodes))
        return dict(zip(nodes, results, strict=True))

    async def _node_view(self, node: str) -> NodeView:
        target = self.targets[node]
        commands: list[Command] = [cmd.container_states(target.project)]
        if target.thermal_limit is not None:
            commands.append(Command(NVIDIA_SMI_QUERY, mutates=False))
        try:
            result = await target.transport.run(Script.of(*commands, stop_on_error=False), check=False,
                                                timeout=NODE_READ_TIMEOUT)
        except SwarmError as exc:
            return NodeView(error=exc.message, unreachable=True)
        view = NodeView()
        states = result.steps[0] if result.steps else None
        if states is None or states.exit_status is None:
            return NodeView(error="no answer from the node", unreachable=True)
        if states.ok:
            view.containers = parse_container_states(states.stdout)
        else:
            view.error = f"docker did not answer: {(states.stderr.strip() or states.stdout.strip())[:160]}"
        if len(result.steps) > 1 and result.steps[1].ok:
            try:
                view.gpus = parse_nvidia_smi(result.steps[1].stdout)
            except RuntimeFailure:
                view.gpus = ()
        return view

    def _check_nodes(self, views: Mapping[str, NodeView]) -> None:
        for node, view in views.items():
            if view.unreachable:
                raise NodeUnreachable(node, view.error or "no answer")

    def _check_heat(self, views: Mapping[str, NodeView]) -> None:
        for node, view in views.items():
            limit = self.targets[node].thermal_limit
            for gpu in view.gpus:
                if limit is not None and gpu.temperature_c is not None and gpu.temperature_c >= limit:
                    raise GateFailed("gpu", node, f"GPU {gpu.index} temperature",
                                     f"{gpu.temperature_c} °C, at or above the {limit:g} °C limit",
                                     self.elapsed(), at_once=True)

    # ------------------------------------------------------------ judging

    async def _evaluate(self, watch: Watch, client: httpx.AsyncClient,
                        views: Mapping[str, NodeView], now: float) -> None:
        svc = watch.service
        view = views[svc.node]
        container = view.containers.get(svc.name)
        outcomes = [self._compose(container, svc, view)]
        outcomes += [await self._probe(p, svc, client) for p in svc.probes if p.kind != "compose"]
        failing = next((o for o in outcomes if not o.ok), None)
        previous = watch.last
        if failing is None:
            watch.passing_since = watch.passing_since or now
            watch.last = outcomes[-1]
            held = now - watch.passing_since
            watch.state = f"passing, held {held:.0f}s of {watch.min_healthy:g}s"
            if held >= watch.min_healthy:
                watch.done = True
                watch.state = "healthy"
                self.bus.emit("gate", "ok", host=svc.node, phase=self.phase, service=svc.name,
                              message=f"{svc.name} healthy ({watch.last.detail})")
                return
        else:
            watch.passing_since = None
            watch.last = failing
            watch.state = f"{failing.probe}: {failing.detail}"
        if previous is None or (previous.ok, previous.detail) != (watch.last.ok, watch.last.detail):
            self.bus.emit("gate", "waiting", host=svc.node, phase=self.phase, service=svc.name,
                          message=f"{svc.name}: {'passing, holding' if failing is None else watch.state}")

    def _compose(self, container: ContainerState | None, svc: Service, view: NodeView) -> Outcome:
        if view.error:
            return Outcome(False, "compose health", view.error)
        return compose_outcome(container, svc)

    async def _probe(self, probe: Probe, svc: Service, client: httpx.AsyncClient) -> Outcome:
        try:  # a port on the node's loopback only is probed through its SSH link (engine/reach.py)
            address, via = await probe_target(self.targets[svc.node].transport, svc, probe)
        except SwarmError as exc:
            return Outcome(False, describe_probe(probe), exc.message)
        if probe.kind == "http":
            outcome = await http_probe(client, address, via, self.secrets)
        else:
            outcome = await tcp_probe(address, via, self.network.tcp)
        outcome.probe = describe_probe(probe)  # named by the node's port, not the forward's
        return outcome

    async def _fail_crashed(self, watches: Sequence[Watch], views: Mapping[str, NodeView]) -> None:
        for watch in watches:
            view = views[watch.service.node]
            if view.error:
                continue
            container = view.containers.get(watch.service.name)
            reason = crash_reason(container, watch.baseline, watch.fresh_since)
            if reason is None:
                if watch.baseline is None and container is not None:
                    watch.baseline = container
                continue
            logs = await self._logs(watch.service.node, container)
            raise GateFailed(watch.service.name, watch.service.node, "container", reason,
                             self.elapsed(), logs=logs, at_once=True)

    async def _logs(self, node: str, container: ContainerState | None) -> list[str]:
        if container is None:
            return []
        try:
            result = await self.targets[node].transport.run(cmd.container_logs(container.id, LOG_LINES),
                                                           check=False, timeout=15)
        except SwarmError:
            return []
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        return lines[-SHOWN_LOG_LINES:]

    def _check_deadlines(self, watches: Sequence[Watch], now: float) -> None:
        for w in watches:
            if not w.done and now >= w.deadline:
                last = w.last or Outcome(False, "probes", "never answered")
                raise GateFailed(w.service.name, w.service.node, last.probe, last.detail, self.elapsed())

    def _progress(self, watches: Sequence[Watch], now: float) -> None:
        """One event per waiting service per round: what the live view shows."""
        for w in watches:
            if w.done:
                continue
            held = now - w.passing_since if w.passing_since is not None else 0.0
            self.bus.emit("gate", "progress", host=w.service.node, phase=self.phase,
                          service=w.service.name, message=f"{w.service.name}: {w.state}",
                          held=round(held, 1), min_healthy=w.min_healthy,
                          deadline_left=round(max(0.0, w.deadline - now), 1), what=self.what)

    def elapsed(self) -> float:
        return time.monotonic() - self.started
