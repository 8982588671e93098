"""Health gates, modelled on Nomad's update block.

Every probe of every gated service must pass and stay passing for `min_healthy_time`,
within `healthy_deadline` (a role may lengthen it: vLLM cold starts take minutes).
HTTP and TCP probes run from the controller against the node's address; compose health
and GPU temperatures come from one batched command per node per round. A GPU at or
above its thermal limit fails the gate at once. A failure names the service, node,
probe and the last answer seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from orchestrator.commands import Command, Script, compose_ps, parse_compose_ps
from orchestrator.config.playbook import GateSpec
from orchestrator.errors import RuntimeFailure
from orchestrator.events import EventBus
from orchestrator.facts.gpu import NVIDIA_SMI_QUERY, GpuReading, parse_nvidia_smi
from orchestrator.render.services import Probe, Service
from orchestrator.secrets import Secret
from orchestrator.transport.base import Transport

MAX_SLEEP = 5.0


class GateFailed(RuntimeFailure):
    def __init__(self, service: str, node: str, probe: str, answer: str, waited: float) -> None:
        super().__init__(
            f"health gate failed: {service} on {node}: {probe} — last answer: {answer} (after {waited:.0f}s)",
            hint=f"look at the service's logs on {node}: docker compose -p swarm-{node} logs {service}",
        )
        self.service, self.node, self.probe, self.answer = service, node, probe, answer


@dataclass
class Outcome:
    ok: bool
    probe: str
    detail: str


@dataclass
class Watch:
    service: Service
    deadline: float
    min_healthy: float
    passing_since: float | None = None
    done: bool = False
    last: Outcome | None = None


@dataclass
class NodeView:
    """What one round's batched command saw on a node."""

    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    gpus: tuple[GpuReading, ...] = ()
    error: str | None = None


def describe_probe(probe: Probe) -> str:
    if probe.kind == "http":
        return f"GET :{probe.port}{probe.path} expecting {probe.status}"
    if probe.kind == "tcp":
        return f"TCP :{probe.port}"
    return "compose health"


async def http_probe(client: httpx.AsyncClient, address: str, probe: Probe,
                     secrets: Mapping[str, Secret]) -> Outcome:
    name = describe_probe(probe)
    headers = {}
    if probe.bearer_secret and probe.bearer_secret in secrets:
        headers["Authorization"] = f"Bearer {secrets[probe.bearer_secret].reveal()}"
    try:
        resp = await client.get(f"http://{address}:{probe.port}{probe.path}", headers=headers,
                                timeout=probe.timeout)
    except httpx.HTTPError as exc:
        return Outcome(False, name, _http_error(exc))
    answer = f"{resp.status_code} {resp.text[:120].strip()!r}"
    if resp.status_code != probe.status:
        return Outcome(False, name, answer)
    if probe.body_contains and probe.body_contains not in resp.text:
        return Outcome(False, name, f"{answer} (missing {probe.body_contains!r})")
    if probe.json_field:
        mismatch = _json_mismatch(resp, probe.json_field)
        if mismatch:
            return Outcome(False, name, mismatch)
    return Outcome(True, name, answer)


def _http_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return type(exc).__name__


def _json_mismatch(resp: httpx.Response, expected: Mapping[str, Any]) -> str | None:
    try:
        data: Any = resp.json()
    except json.JSONDecodeError:
        return f"{resp.status_code} not JSON: {resp.text[:80]!r}"
    for path, want in expected.items():
        got = dig(data, path)
        if got != want:
            return f"{resp.status_code} {path} = {got!r}, expected {want!r}"
    return None


def dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data


async def tcp_probe(address: str, probe: Probe) -> Outcome:
    name = describe_probe(probe)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, probe.port), probe.timeout)
    except (OSError, TimeoutError) as exc:
        return Outcome(False, name, f"cannot connect: {exc.__class__.__name__}")
    writer.close()
    return Outcome(True, name, "connected")


def compose_outcome(view: NodeView, svc: Service) -> Outcome:
    name = "compose health"
    if view.error:
        return Outcome(False, name, view.error)
    row = view.containers.get(svc.name)
    if row is None:
        return Outcome(False, name, "no container")
    state, health = str(row.get("State", "")), str(row.get("Health", ""))
    if state != "running":
        return Outcome(False, name, f"container {state} ({row.get('Status', '')})")
    if svc.has_healthcheck and health != "healthy":
        return Outcome(False, name, f"container running, health {health or 'unknown'}")
    return Outcome(True, name, f"running{', healthy' if health else ''}")


class Gate:
    """Waits until every watched service is healthy long enough, or fails."""

    def __init__(self, *, services: list[Service], transports: Mapping[str, Transport],
                 compose_files: Mapping[str, str], spec: GateSpec, secrets: Mapping[str, Secret],
                 thermal_limits: Mapping[str, float], bus: EventBus, phase: int) -> None:
        self.services = services
        self.transports = transports
        self.compose_files = compose_files
        self.spec = spec
        self.secrets = secrets
        self.thermal_limits = thermal_limits
        self.bus = bus
        self.phase = phase

    async def run(self) -> None:
        start = time.monotonic()
        watches = [self._watch(s, start) for s in self.services]
        sleep = self.spec.poll_interval
        async with httpx.AsyncClient() as client:
            while True:
                views = await self._node_views()
                self._check_heat(views, start)
                now = time.monotonic()
                await asyncio.gather(*(self._evaluate(w, client, views, now) for w in watches if not w.done))
                if all(w.done for w in watches):
                    return
                self._check_deadlines(watches, time.monotonic(), start)
                await asyncio.sleep(sleep)
                sleep = min(MAX_SLEEP, sleep * 1.5)

    def _watch(self, svc: Service, start: float) -> Watch:
        if svc.vars.get("healthy_deadline") is not None:  # set on the instance: exactly this
            deadline = svc.healthy_deadline or 0.0
        else:  # a role may lengthen the phase's deadline (cold starts), never shorten it
            deadline = max(self.spec.healthy_deadline, svc.healthy_deadline or 0.0)
        min_healthy = svc.min_healthy_time if svc.min_healthy_time is not None else self.spec.min_healthy_time
        return Watch(service=svc, deadline=start + deadline, min_healthy=min_healthy)

    async def _node_views(self) -> dict[str, NodeView]:
        nodes = sorted({s.node for s in self.services})
        results = await asyncio.gather(*(self._node_view(n) for n in nodes))
        return dict(zip(nodes, results, strict=True))

    async def _node_view(self, node: str) -> NodeView:
        """One round trip per node and round, and none when nothing there needs the node."""
        wants_compose = any(p.kind == "compose" for s in self.services if s.node == node for p in s.probes)
        wants_heat = node in self.thermal_limits
        if not (wants_compose or wants_heat):
            return NodeView()
        transport = self.transports[node]
        commands: list[Command] = [compose_ps(f"swarm-{node}", self.compose_files[node])]
        if wants_heat:
            commands.append(Command(NVIDIA_SMI_QUERY, mutates=False))
        try:
            result = await transport.run(Script.of(*commands, stop_on_error=False), check=False, timeout=30)
        except RuntimeFailure as exc:
            return NodeView(error=str(exc))
        view = NodeView()
        ps = result.steps[0] if result.steps else None
        if ps is not None and ps.ok:
            view.containers = {str(r.get("Service")): r for r in parse_compose_ps(ps.stdout)}
        elif ps is not None:
            view.error = f"docker compose ps failed: {ps.stderr.strip()[:120]}"
        if len(result.steps) > 1 and result.steps[1].ok:
            try:
                view.gpus = parse_nvidia_smi(result.steps[1].stdout)
            except RuntimeFailure:
                view.gpus = ()
        return view

    def _check_heat(self, views: Mapping[str, NodeView], start: float) -> None:
        for node, view in views.items():
            limit = self.thermal_limits.get(node)
            for gpu in view.gpus:
                if limit is not None and gpu.temperature_c is not None and gpu.temperature_c >= limit:
                    raise GateFailed("gpu", node, f"GPU {gpu.index} temperature",
                                     f"{gpu.temperature_c} °C, at or above the {limit:g} °C limit",
                                     time.monotonic() - start)

    async def _evaluate(self, watch: Watch, client: httpx.AsyncClient,
                        views: Mapping[str, NodeView], now: float) -> None:
        svc = watch.service
        outcomes = [await self._probe(p, svc, client, views[svc.node]) for p in svc.probes]
        failing = next((o for o in outcomes if not o.ok), None)
        previous = watch.last
        if failing is None:
            watch.passing_since = watch.passing_since or now
            watch.last = outcomes[-1] if outcomes else Outcome(True, "none", "no probes")
            if now - watch.passing_since >= watch.min_healthy:
                watch.done = True
                self.bus.emit("gate", "ok", host=svc.node, phase=self.phase,
                              message=f"{svc.name} healthy ({watch.last.detail})", service=svc.name)
                return
        else:
            watch.passing_since = None
            watch.last = failing
        if previous is None or (previous.ok, previous.detail) != (watch.last.ok, watch.last.detail):
            state = "passing, holding" if failing is None else f"{watch.last.probe}: {watch.last.detail}"
            self.bus.emit("gate", "waiting", host=svc.node, phase=self.phase,
                          message=f"{svc.name}: {state}", service=svc.name)

    async def _probe(self, probe: Probe, svc: Service, client: httpx.AsyncClient, view: NodeView) -> Outcome:
        if probe.kind == "http":
            return await http_probe(client, svc.address, probe, self.secrets)
        if probe.kind == "tcp":
            return await tcp_probe(svc.address, probe)
        return compose_outcome(view, svc)

    def _check_deadlines(self, watches: list[Watch], now: float, start: float) -> None:
        for w in watches:
            if not w.done and now >= w.deadline:
                last = w.last or Outcome(False, "probes", "never answered")
                raise GateFailed(w.service.name, w.service.node, last.probe, last.detail, now - start)
