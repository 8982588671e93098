"""How each changed service of a phase is put in place: recreated, reloaded, or rolled.

A role says how (config/rollout.py); the plan picks per service, from what the node said:

* **recreate** — compose recreates the container in the phase's apply step (every role).
* **reload** — the service's compose definition and env file are those it runs, only its
  config files changed, and its role reloads (HAProxy's master-worker on SIGUSR2,
  Prometheus on SIGHUP): the apply step installs the new files into the directory the
  container mounts (`configs/<svc>/live`) and signals it. HAProxy keeps its listeners; swarm
  checks over its runtime API that the worker changed. The undo installs the old files and
  signals again.
* **rolling** — a model server behind the front door, changed while it runs. After the apply
  step, per model (an HAProxy backend), one instance at a time, groups in parallel:

      drain in HAProxy (set server ... state drain; saved to the server-state file, so a
      reload or restart of HAProxy keeps it drained)
      -> wait until HAProxy shows no session on it and the server's own
         vllm:num_requests_running is 0, at most `drain_timeout`
      -> `compose up` its new definition (compose stops the old container with the role's
         stop grace; the image was pulled in the apply step)
      -> the gate for that instance, plus one real completion
      -> state ready (and health up: swarm's gate has seen it) -> the next instance

  A model with one instance has no other server meanwhile: HAProxy holds its requests (the
  role's Lua hold) for up to `queue_timeout`, then answers 503 with Retry-After.

A failure anywhere unwinds every instance of the phase that moved, with the same discipline
(drain, wait, the previous definition, gate, completion, ready), before the rest of the
phase's undo; instances not reached are never touched. A signal does the same: an instance
caught draining is simply put back (it still runs its old container).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from orchestrator import commands as cmd
from orchestrator.addresses import http_url
from orchestrator.clients.haproxy import RuntimeApi, RuntimeApiError, unix_link
from orchestrator.commands import Command, Script
from orchestrator.commands.rollout import compose_pull, install_live_config, run_dir, signal_service
from orchestrator.config.inventory import Inventory, Node
from orchestrator.engine.gate import GateFailed
from orchestrator.engine.reach import FORWARDED_HOST, is_loopback
from orchestrator.engine.signals import Interrupts
from orchestrator.engine.steps import ApplyHooks, NodeStep, compose_file
from orchestrator.errors import RuntimeFailure, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import NodeState
from orchestrator.facts.probes import ProbeNetwork
from orchestrator.render.frontdoor import backend_of
from orchestrator.render.services import Service
from orchestrator.secrets import Secret, scrub
from orchestrator.transport.base import Transport, check_result
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.ssh import SshTransport, target_for

if TYPE_CHECKING:  # httpx is imported when a rollout runs, not by the no-op deploy path
    pass

POLL = 0.5                 # drain and reload checks: seconds between looks
RELOAD_WAIT = 15.0         # a reload that has not taken by then failed
COMPLETION_TIMEOUT = 60.0
COMPLETION_PROMPT = "swarm rollout check: reply with one word"
_RUNNING = re.compile(r"^vllm:num_requests_running(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class NodeRollout:
    """One node's changed services of a phase, by how each is put in place."""

    compose: tuple[str, ...] = ()                # recreated by compose in the apply step
    reload: tuple[Service, ...] = ()             # config files only: installed and signalled
    live: tuple[tuple[Service, str], ...] = ()   # reloadable services and the config the apply installs
    rolling: tuple[Service, ...] = ()            # swapped one at a time after the apply step

    @property
    def applied_by_step(self) -> tuple[str, ...]:
        """What the apply step itself changes (and its undo takes back)."""
        return (*self.compose, *(s.name for s in self.reload))


def doors_of(services: Sequence[Service]) -> list[Service]:
    """The front doors of the fleet: HAProxy instances with a runtime API."""
    return [s for s in services if s.role == "haproxy" and s.rollout.socket]


def plan_node(to_apply: Sequence[str], reasons: Mapping[str, str], services: Sequence[Service],
              state: NodeState, project: str, *, shapes: Mapping[str, str], configs: Mapping[str, str],
              doors: Sequence[Service]) -> NodeRollout:
    """recreate / reload / rolling for each service to apply (see the module docstring).

    `shapes` and `configs` are those of the release being put in place (a deploy's render, or
    the release a rollback goes back to); the node's current release recorded its own."""
    by_name = {s.name: s for s in services}
    recorded = dict((state.current or {}).get("shapes") or {})
    compose: list[str] = []
    reload: list[Service] = []
    rolling: list[Service] = []
    for name in to_apply:
        svc = by_name.get(name)
        running = reasons.get(name, "changed") == "changed" and state.is_running(name, project)
        if svc is None or not running:
            compose.append(name)
        elif svc.rollout.reloads and name in configs and name in shapes and recorded.get(name) == shapes[name]:
            reload.append(svc)
        elif svc.rollout.rolling and doors:
            rolling.append(svc)
        else:
            compose.append(name)
    live = [(by_name[n], configs[n]) for n in compose if n in by_name and by_name[n].rollout.reloads and n in configs]
    live += [(s, configs[s.name]) for s in reload]
    return NodeRollout(compose=tuple(compose), reload=tuple(reload), live=tuple(live), rolling=tuple(rolling))


def release_extra(shapes: Mapping[str, str], configs: Mapping[str, str], state: NodeState) -> dict[str, Any]:
    """What a release records beside `applied` so the next plan can tell a config-only change
    of a reloadable service (`shapes`) and its undo can put the old config back (`configs`)."""
    current = state.current or {}
    return {"shapes": {**dict(current.get("shapes") or {}), **shapes},
            "configs": {**dict(current.get("configs") or {}), **configs}}


def taken_extra(target: Mapping[str, Any], state: NodeState, take: Sequence[str]) -> dict[str, Any]:
    """A rollback release's `shapes` and `configs`: the current release's, with those of the
    services it takes from the target release (what the target recorded of them)."""
    shapes = {k: v for k, v in dict(target.get("shapes") or {}).items() if k in take}
    configs = {k: v for k, v in dict(target.get("configs") or {}).items() if k in take}
    current = state.current or {}
    kept_shapes = {k: v for k, v in dict(current.get("shapes") or {}).items() if k not in take}
    kept_configs = {k: v for k, v in dict(current.get("configs") or {}).items() if k not in take}
    return {"shapes": {**kept_shapes, **shapes}, "configs": {**kept_configs, **configs}}


def apply_hooks(node: Node, plan: NodeRollout, state: NodeState, release: str, *, pull: bool = True) -> ApplyHooks:
    """The apply step's share of the rollout: run dirs and live configs before compose, the
    rolling instances' images pulled (not by a rollback: it checked its images are on the node,
    and a pull would ask the registry), reload signals after; their undo."""
    root, project = node.deploy_root, node.project
    before: list[Command] = [run_dir(root, s.name) for s, _ in plan.live if s.rollout.run_dir]
    before += [install_live_config(root, s.name, digest) for s, digest in plan.live]
    if plan.rolling and pull:
        before.append(compose_pull(project, compose_file(node, release), [s.name for s in plan.rolling]))
    after = [signal_service(project, s.name, str(s.rollout.reload_signal)) for s in plan.reload]
    old = dict((state.current or {}).get("configs") or {})
    undo_before = [install_live_config(root, s.name, old[s.name]) for s, _ in plan.live if s.name in old]
    undo_after = [signal_service(project, s.name, str(s.rollout.reload_signal)) for s in plan.reload]
    return ApplyHooks(before_up=tuple(before), after_up=tuple(after), undo_before=tuple(undo_before),
                      undo_after=tuple(undo_after), up=plan.compose)


def swap_step(node: Node, svc: Service, *, release: str, previous: str) -> NodeStep:
    """One instance onto its new definition (compose stops the old container with its grace);
    the undo brings the previous definition back. Journaled like any step, so a cut-off run's
    `swarm rollback --resume` can still put it back."""
    project = node.project
    new = Script.of(cmd.node_clock(), cmd.compose_up(project, compose_file(node, release), [svc.name]))
    old = (cmd.node_clock(), cmd.compose_up(project, compose_file(node, previous), [svc.name]))
    return NodeStep(name="swap", node=node.name, script=new, undo=old, touches_from=1,
                    summary=f"swap {svc.name}")


def restore_script(node: Node, svc: Service, previous: str) -> Script:
    return Script.of(cmd.node_clock(), cmd.compose_up(node.project, compose_file(node, previous), [svc.name]))


# ---------------------------------------------------------------- the front door


@dataclass
class Door:
    """One HAProxy's runtime API, and where its server-state file lives on its node."""

    service: Service
    api: RuntimeApi
    link: Transport

    async def set(self, backend: str, server: str, state: str) -> None:
        await self.api.set_state(backend, server, state)
        if state == "ready":
            await self.api.mark_up(backend, server)
        await self.save()

    async def save(self) -> None:
        """`show servers state` into the file HAProxy loads at every (re)start and reload."""
        path = self.service.rollout.state_file
        if not path:
            return
        text = await self.api.servers_state()
        result = await self.link.run(cmd.write_file(path, 0o644), input=text.encode(), check=False)
        check_result(self.link.host, result)

    async def sessions(self, backend: str, server: str) -> int:
        return (await self.api.server(backend, server)).sessions


async def open_doors(fleet: Fleet, inventory: Inventory, doors: Sequence[Service]) -> list[Door]:
    """Each front door's runtime API over the run's connection to its node (opened now when
    the run did not select that node: it is not locked, nothing on it changes)."""
    out = []
    for svc in doors:
        link = await door_link(fleet, inventory, svc.node)
        out.append(Door(service=svc, api=RuntimeApi(unix_link(link), str(svc.rollout.socket), service=svc.name), link=link))
    return out


async def door_link(fleet: Fleet, inventory: Inventory, node: str) -> Transport:
    if node not in fleet:
        fleet.transports[node] = SshTransport(target_for(inventory, inventory.node(node)))
    if node in fleet.unreachable or not getattr(fleet[node], "is_connected", True):
        if not await fleet.reconnect(node, attempts=2):
            raise RuntimeFailure(f"the front door's node {node} is unreachable: a rolling rollout cannot "
                                 f"drain its model servers ({fleet.unreachable[node].message})",
                                 hint=f"bring {node} back, or set `rollout: recreate` on the instances")
    return fleet[node]


# ---------------------------------------------------------------- one instance


@dataclass
class Move:
    """One rolling instance of a phase and how far it got."""

    svc: Service
    node: Node
    release: str
    previous: str
    stage: str = "waiting"   # waiting | drained | swapped | ready
    entry: Any = None        # the runner's journal entry of its swap

    @property
    def backend(self) -> str:
        return backend_of(str(self.svc.vars.get("served_model_name") or ""))

    @property
    def moved(self) -> bool:
        return self.stage != "waiting"


@dataclass
class Swapper:
    """Drain, wait, swap, check and re-enable one instance; the runner sequences them."""

    fleet: Fleet
    bus: EventBus
    doors: list[Door]
    secrets: Mapping[str, Secret]
    interrupts: Interrupts
    phase: int
    network: ProbeNetwork | None = None
    clock: Callable[[], float] = time.monotonic
    waits: dict[str, float] = field(default_factory=dict)   # instance -> seconds its drain took

    async def drain(self, move: Move, *, unwinding: bool = False) -> None:
        for door in self.doors:
            await door.set(move.backend, move.svc.name, "drain")
            if move.stage == "waiting":  # from here on, an unwind must put it back
                move.stage = "drained"
        await self.wait_idle(move, unwinding=unwinding)

    async def wait_idle(self, move: Move, *, unwinding: bool) -> None:
        """Until no session in HAProxy and nothing running in the server, at most drain_timeout."""
        svc, limit = move.svc, move.svc.rollout.drain_timeout
        start = self.clock()
        while True:
            self.interrupts.check(unwinding=unwinding)
            sessions = sum([await d.sessions(move.backend, svc.name) for d in self.doors])
            running = await self.running(svc)
            waited = self.clock() - start
            in_flight = max(sessions, running)
            self.bus.emit("drain", "progress", host=svc.node, phase=self.phase, service=svc.name,
                          message=f"{svc.name}: draining, {in_flight} in flight, {waited:.0f} s of {limit:g} s",
                          in_flight=in_flight, sessions=sessions, running=running,
                          waited=round(waited, 1), limit=limit)
            if in_flight == 0:
                self.waits[svc.name] = waited
                self.bus.emit("drain", "ok", host=svc.node, phase=self.phase, service=svc.name,
                              message=f"{svc.name}: drained in {waited:.0f} s")
                return
            if waited >= limit:
                self.waits[svc.name] = waited
                self.bus.emit("drain", "timeout", host=svc.node, phase=self.phase, service=svc.name,
                              message=f"{svc.name}: still {in_flight} in flight after drain_timeout "
                                      f"{limit:g} s: stopping it anyway (those requests are cut)")
                return
            await self.interrupts.sleep(POLL, unwinding=unwinding)

    async def running(self, svc: Service) -> int:
        """The server's own count of requests being generated (vllm:num_requests_running)."""

        url = await self.base_url(svc) + "/metrics"
        transport = self.network.http_transport if self.network else None
        try:
            async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
                resp = await client.get(url)
        except httpx.HTTPError:
            return 0  # not answering: nothing it holds can still finish
        return running_requests(resp.text) if resp.status_code == 200 else 0

    async def base_url(self, svc: Service) -> str:
        """Where the controller reaches the instance itself: its address, or — published on its
        node's loopback only — through that node's SSH connection (engine/reach.py)."""
        port = svc.ports[0].port
        if is_loopback(svc, port) and svc.node in self.fleet:
            forward = getattr(self.fleet[svc.node], "forward_local", None)
            if forward is not None:
                return http_url(FORWARDED_HOST, await forward(port))
        return http_url(svc.address, port)

    async def ready(self, move: Move) -> None:
        for door in self.doors:
            await door.set(move.backend, move.svc.name, "ready")
        move.stage = "ready"

    async def completion(self, svc: Service) -> None:
        """One real chat completion from the instance itself, after its gate."""

        transport = self.network.http_transport if self.network else None
        started = self.clock()
        try:
            async with httpx.AsyncClient(transport=transport, timeout=COMPLETION_TIMEOUT) as client:
                resp = await client.post(await self.base_url(svc) + "/v1/chat/completions",
                                         json=completion_body(svc), headers=bearer(svc, self.secrets))
        except httpx.HTTPError as exc:
            raise GateFailed(svc.name, svc.node, "a real completion", f"{type(exc).__name__}",
                             self.clock() - started, at_once=True) from None
        problem = completion_problem(resp.status_code, resp.text)
        if problem:
            raise GateFailed(svc.name, svc.node, "a real completion", scrub(problem), self.clock() - started,
                             at_once=True)
        self.bus.emit("gate", "ok", host=svc.node, phase=self.phase, service=svc.name,
                      message=f"{svc.name} answered a real completion")


def completion_body(svc: Service) -> dict[str, Any]:
    return {"model": str(svc.vars.get("served_model_name") or ""), "max_tokens": 1, "stream": False,
            "messages": [{"role": "user", "content": COMPLETION_PROMPT}]}


def bearer(svc: Service, secrets: Mapping[str, Secret]) -> dict[str, str]:
    name = next((p.bearer_secret for p in svc.probes if p.bearer_secret), None)
    if name and name in secrets:
        return {"Authorization": f"Bearer {secrets[name].reveal()}"}
    return {}


def completion_problem(status: int, text: str) -> str | None:
    if status != 200:
        return f"{status} {text[:160]!r}"
    try:
        choices = json.loads(text).get("choices")
    except (ValueError, AttributeError):
        return f"200 but not a completion: {text[:160]!r}"
    return None if choices else f"200 without choices: {text[:160]!r}"


def running_requests(metrics: str) -> int:
    return int(sum(float(m) for m in _RUNNING.findall(metrics)))


# ---------------------------------------------------------------- groups


def groups_of(moves: Sequence[Move]) -> dict[str, list[Move]]:
    """Instances by the model they serve (their front-door backend), each in name order."""
    out: dict[str, list[Move]] = {}
    for move in sorted(moves, key=lambda m: m.svc.name):
        out.setdefault(move.backend, []).append(move)
    return out


async def run_groups(groups: Mapping[str, list[Move]],
                     one: Callable[[Move], Awaitable[None]]) -> None:
    """Every group at once, each one instance at a time; once one fails the others start no
    further instance (the one they are on finishes its step), then the first failure is raised."""
    stop = asyncio.Event()

    async def group(moves: list[Move]) -> None:
        for move in moves:
            if stop.is_set():
                return
            try:
                await one(move)
            except BaseException:
                stop.set()
                raise

    outcomes = await asyncio.gather(*(group(m) for m in groups.values()), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        first = next((f for f in failures if not isinstance(f, SwarmError)), failures[0])
        raise first


def reload_pending(plan_reloads: Sequence[Service]) -> list[Service]:
    return [s for s in plan_reloads if s.rollout.reload_confirm == "runtime-api" and s.rollout.socket]


async def worker_pids(fleet: Fleet, services: Sequence[Service]) -> dict[str, int | None]:
    """Before a reload: each reloading HAProxy's worker pid (None: not answering yet)."""
    out: dict[str, int | None] = {}
    for svc in services:
        try:
            out[svc.name] = await RuntimeApi(unix_link(fleet[svc.node]), str(svc.rollout.socket), service=svc.name).worker_pid()
        except (RuntimeApiError, SwarmError):
            out[svc.name] = None
    return out


async def confirm_reloads(fleet: Fleet, services: Sequence[Service], before: Mapping[str, int | None],
                          bus: EventBus, phase: int, interrupts: Interrupts, *, wait: float = RELOAD_WAIT) -> None:
    """A reload took when HAProxy answers from a new worker; else the new config was refused
    (HAProxy keeps its old worker then): after `wait` seconds the phase fails, naming it.

    Halfway, a reload that has not taken is signalled once more: HAProxy's master may let a
    SIGUSR2 go unheeded (seen here about once in twenty, right after it started); a config it
    refuses stays refused the second time."""
    for svc in services:
        api = RuntimeApi(unix_link(fleet[svc.node]), str(svc.rollout.socket), service=svc.name)
        started = time.monotonic()
        resent = False
        while True:
            try:
                pid: int | None = await api.worker_pid()
            except RuntimeApiError:
                pid = None
            if pid is not None and pid != before.get(svc.name):
                bus.emit("reload", "ok", host=svc.node, phase=phase, service=svc.name,
                         message=f"{svc.name} reloaded its config (new worker {pid}, listeners kept)")
                break
            waited = time.monotonic() - started
            if waited >= wait:
                raise RuntimeFailure(f"{svc.name} on {svc.node} did not load its new config: its worker did not "
                                     f"change within {wait:g}s of the reload signal",
                                     hint=f"docker compose -p swarm-{svc.node} logs {svc.name}")
            if not resent and waited >= wait / 2:
                resent = True
                node = fleet[svc.node]
                await node.run(signal_service(f"swarm-{svc.node}", svc.name, str(svc.rollout.reload_signal)))
            await interrupts.sleep(POLL)
