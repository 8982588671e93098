"""A fleet of replayed nodes for the engine's data tests: facts in, commands out.

Each node answers with what the lab recorded (tests/unit/fixtures/lab/), its release
record rewritten so that its `applied` hashes are what the project renders now — except
the services a case says changed, are missing, or stopped. Probes reach a network that
answers like the healthy services would (the HTTP/TCP boundary, as the replay is for SSH).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from orchestrator.clients.vault import parse_env_file
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project, load_project
from orchestrator.engine.consul import ConsulSync
from orchestrator.engine.context import Boundaries, DeployResult
from orchestrator.engine.plan import content_for
from orchestrator.engine.reach import FORWARDED_HOST, is_loopback
from orchestrator.engine.runbook import Deploy, Options
from orchestrator.engine.selection import parse_phases, select
from orchestrator.engine.signals import Interrupts
from orchestrator.events import EventBus
from orchestrator.facts.probes import ProbeNetwork
from orchestrator.models.resolve import Resolution, moving_pins
from orchestrator.models.snapshot import Snapshot, WeightFile
from orchestrator.render.fleet import FleetRender, render_fleet
from orchestrator.render.weights import WeightsPin
from orchestrator.secrets import Secret
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.replay import Answer, ReplayTransport, Reply
from tests.unit.lab_answers import answer, docker_ps, recorded, release_record, states

REPO = Path(__file__).resolve().parents[3]
FAKE = "0" * 16
OLD_CONFIG = "c0ffee0000000000"


def lab_secrets(project: Project) -> dict[str, Secret]:
    from orchestrator.clients.secrets_source import match_env_keys

    values, _ = match_env_keys(parse_env_file(REPO / "examples/lab-secrets.env"), project.playbook.spec.secrets)
    return values


async def _answer_http(request: httpx.Request) -> httpx.Response:
    """What a healthy service answers: the JSON each probe expects, or a body with its marker."""
    key = (request.url.host, request.url.port or 0, request.url.path)
    if key in _BODIES:
        return httpx.Response(200, text=_BODIES[key])
    wanted = _EXPECTED.get(key)
    if wanted is not None:
        return httpx.Response(200, json=_json_of(wanted))
    return httpx.Response(200, text=" ".join(_MARKERS.get((request.url.host, request.url.port or 0), ["ok"])))


_EXPECTED: dict[tuple[str, int, str], dict[str, Any]] = {}
_MARKERS: dict[tuple[str, int], list[str]] = {}
_BODIES: dict[tuple[str, int, str], str] = {}


def _json_of(dotted: dict[str, Any]) -> Any:
    """{"data.0.id": "m"} -> {"data": [{"id": "m"}]}: the document a probe's expectations describe."""
    root: dict[str, Any] = {}
    for path, value in dotted.items():
        _put(root, path.split("."), value)
    return root


def _put(node: Any, parts: list[str], value: Any) -> None:
    head, rest = parts[0], parts[1:]
    fresh: Any = ([] if rest[0].isdigit() else {}) if rest else value
    if isinstance(node, list):
        index = int(head)
        node.extend([None] * (index + 1 - len(node)))
        if not rest or node[index] is None:
            node[index] = fresh
    elif not rest:
        node[head] = value
    else:
        node.setdefault(head, fresh)
    if rest:
        _put(node[int(head)] if isinstance(node, list) else node[head], rest, value)


async def _tcp_ok(address: str, port: int, timeout: float) -> None:
    return None


def healthy_network(project: Project, fleet: FleetRender) -> ProbeNetwork:
    for svc in fleet.all_services():
        for probe in svc.probes:
            if probe.kind != "http" or not probe.port:
                continue
            # a port on the node's loopback is probed through the (replayed) SSH forward
            host = FORWARDED_HOST if is_loopback(svc, probe.port) else svc.address
            if probe.json_field:
                _EXPECTED[(host, int(probe.port), probe.path)] = dict(probe.json_field)
            if probe.body_contains:
                _MARKERS.setdefault((host, int(probe.port)), ["ok"]).append(probe.body_contains)
        if svc.rollout.rolling and svc.ports:  # a model server: its metrics and a real completion
            port = svc.ports[0].port
            _BODIES[(svc.address, port, "/metrics")] = 'vllm:num_requests_running{model_name="m"} 0.0\n'
            _EXPECTED[(svc.address, port, "/v1/chat/completions")] = {"choices.0.finish_reason": "length"}
    return ProbeNetwork(http_transport=httpx.MockTransport(_answer_http), tcp=_tcp_ok)


@dataclass
class NodeCase:
    """How one replayed node looks at the start of a run."""

    changed: Iterable[str] = ()          # recorded applied hash differs from the render
    missing: Iterable[str] = ()          # not in the current release at all
    stopped: Iterable[str] = ()          # its container exited
    first_deploy: bool = False           # no current release, no releases
    lock: str = "auto"                   # auto | locked | unchanged | held
    holder: dict[str, Any] = field(default_factory=lambda: {"by": "alice@other", "pid": 4242,
                                                            "host": "elsewhere", "phases": [3]})
    fail_on: dict[str, int] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)
    releases: list[str] | None = None
    dead: bool = False                   # unreachable from the start
    die_after: dict[str, int] = field(default_factory=dict)  # key -> the link dies after the Nth such command
    drop_on: dict[str, int] = field(default_factory=dict)    # key -> the link drops during it, then returns
    config_only: Iterable[str] = ()      # changed, but only their config files (a reloadable role)
    haproxy: dict[str, Any] = field(default_factory=dict)    # the front door's runtime API (FakeHaproxy)


def fast_gates(project: Project) -> Project:
    """The project with gates that hold for a moment: a data test is about logic, not minutes."""
    from dataclasses import replace

    from orchestrator.config.playbook import GateSpec

    gate = GateSpec(healthy_deadline=5.0, min_healthy_time=0.1, poll_interval=0.02)
    phases = tuple(replace(p, spec=p.spec.model_copy(update={"gate": gate})) for p in project.playbook.phases)
    return replace(project, playbook=replace(project.playbook, phases=phases))


# the weights each replayed node holds staged (its release records them): models/resolve.py
COMMIT = "c0ffee" + "0" * 34
MOVED = "beef" + "0" * 36
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_SHA = "5" * 64

class ReplayFleet:
    def __init__(self, project: Project | None = None) -> None:
        self.project = project or fast_gates(load_project(REPO))
        self.secrets = lab_secrets(self.project)
        self.render = render_fleet(self.project, for_node=True)
        self.transports: dict[str, ReplayTransport] = {}
        # the hub's answer for every moving weights revision (`main`): the commit each node serves
        # (its release records it, its store holds it: models/resolve.py), unless a case moves `main`
        # (the new commit staged ahead) or takes the hub down (`set_hub`)
        self.revisions = Resolution({p: COMMIT for p in moving_pins(self.render.all_services())})

    def wanted(self, node: str) -> dict[str, str]:
        render = self.render.nodes[node]
        out: dict[str, str] = {}
        for phase in sorted({s.phase for s in render.services}):
            out.update(content_for(render, phase, self.secrets).service_hashes)
        return out

    def shapes(self, node: str) -> dict[str, str]:
        render = self.render.nodes[node]
        out: dict[str, str] = {}
        for phase in sorted({s.phase for s in render.services}):
            out.update(content_for(render, phase, self.secrets).shapes)
        return out

    def set_hub(self, hub: str) -> None:
        """`moved`: `main` names MOVED now (staged ahead on every node); `down`: the hub does not answer."""
        pins = moving_pins(self.render.all_services())
        if hub == "moved":
            self.revisions = Resolution({p: MOVED for p in pins})
        elif hub == "down":
            self.revisions = Resolution(failed={p: "replay: the hub is down" for p in pins})

    def staged(self, node: str, commit: str = COMMIT) -> dict[str, Snapshot]:
        """service -> its weights at `commit` (what its node serves: the release records it)."""
        return {s.name: staged_snapshot(s.weights.at(commit) if s.weights.moving else s.weights)
                for s in self.render.nodes[node].services if s.weights is not None}

    def store(self, node: str) -> list[Snapshot]:
        """What the node's store holds: what it serves, and what the hub names now."""
        return [*self.staged(node).values(), *(staged_snapshot(p.at(c)) for p, c in self.revisions.commits.items()
                                               if any(s.weights == p for s in self.render.nodes[node].services))]

    def node(self, name: str, case: NodeCase | None = None) -> ReplayTransport:
        case = case or NodeCase()
        if case.dead:
            transport = ReplayTransport(name, dead=True)
            self.transports[name] = transport
            return transport
        record = release_record(name)
        applied = {k: (FAKE if k in set(case.changed) else v) for k, v in self.wanted(name).items()
                   if k not in set(case.missing)}
        record["applied"] = applied
        if case.config_only:  # the release that runs them recorded their shape and an older config
            shapes = self.shapes(name)
            record["shapes"] = {k: shapes[k] for k in case.config_only}
            record["configs"] = {k: OLD_CONFIG for k in case.config_only}
        record["models"] = {k: v.to_json() for k, v in self.staged(name).items()}
        rows = docker_ps(name)
        for svc in case.stopped:
            rows = _stopped(rows, svc)
        releases = case.releases if case.releases is not None else \
            recorded(name)["list-releases"]["stdout"].split()
        replies: dict[str, Reply] = {
            "look-lock": self._lock_answer(case),
            "read-file": Answer(0, "swarm:missing\n") if case.first_deploy else
            Answer(0, "swarm:present\n" + json.dumps(record, indent=2)),
            "list-releases": Answer(0, "" if case.first_deploy else "\n".join(releases) + "\n"),
            "docker-ps": Answer(0, rows),
            "infra-ready": Answer(0, "ready\n"),
            "container-states": states(name),
            "node-clock": answer(name, "node-clock"),
            "models-list": Answer(0, store_listing(self.store(name), self.project.inventory.node(name))),
            "models-hash": Answer(0, f"{WEIGHTS_SHA} *{WEIGHTS_FILE}\n"),
            **case.replies,
        }
        transport = ReplayTransport(name, replies=replies, fail_on=dict(case.fail_on), dead=case.dead,
                                    drop_on=dict(case.drop_on))
        if any(s.role == "haproxy" for s in self.render.nodes[name].services):
            transport.replies.setdefault("unix-socket", FakeHaproxy(transport, self.render, **case.haproxy))
        for key, nth in case.die_after.items():
            transport.replies[key] = _then(transport, key, nth, transport.replies.get(key, Answer()),
                                           lambda t=transport: setattr(t, "dead", True))
        self.transports[name] = transport
        return transport

    def _lock_answer(self, case: NodeCase) -> Reply:
        holder = json.dumps(case.holder)
        if case.lock == "held":
            return Answer(75, holder + "\n")
        if case.lock == "unchanged":
            return Answer(0, "unchanged\n")
        if case.lock == "locked" or case.changed or case.missing or case.first_deploy:
            return Answer(0, "locked\n")
        return Answer(0, "unchanged\n")

    def deploy(self, *, phases: str | None = None, limit: str | None = None, check: bool = False,
               interrupts: Interrupts | None = None, state_dir: Path, bus: EventBus | None = None,
               nodes: Mapping[str, NodeCase] | None = None, plan_cache: Any = None, plan_key: str | None = None,
               ) -> DeployResult:
        return asyncio.run(self.deploying(phases=phases, limit=limit, check=check, interrupts=interrupts,
                                          state_dir=state_dir, bus=bus, nodes=nodes, plan_cache=plan_cache,
                                          plan_key=plan_key))

    async def deploying(self, *, phases: str | None = None, limit: str | None = None, check: bool = False,
                        interrupts: Interrupts | None = None, state_dir: Path, bus: EventBus | None = None,
                        nodes: Mapping[str, NodeCase] | None = None, plan_cache: Any = None,
                        plan_key: str | None = None, session: Any = None, first: Any = None) -> DeployResult:
        """The runbook over these replayed nodes (or over `session`, as the first question left it)."""
        ids = parse_phases(phases, self.project)
        sel = select(self.project, ids, limit)
        for node in sel.nodes:
            if node.name not in self.transports:
                self.node(node.name, (nodes or {}).get(node.name))
        doors = [s.node for s in self.render.all_services() if s.role == "haproxy"]
        for door in doors:  # the front door's node answers runtime API calls (a rolling rollout)
            if door not in self.transports:
                self.node(door, (nodes or {}).get(door))
        names = dict.fromkeys([*(n.name for n in sel.nodes), *doors])
        bus = bus or EventBus()
        world = Boundaries(fleet=None if session else Fleet([self.transports[n] for n in names]),
                           secrets=None if first else self.secrets, state_dir=state_dir,
                           consul=ConsulSync(addr=None, fleet="ai-swarm", bus=bus),
                           network=healthy_network(self.project, self.render),
                           revisions=self.revisions)
        run = Deploy(self.project, Options(phases=ids, limit=limit, check=check, skip_preflight=True, by="tester"),
                     bus, interrupts=interrupts, session=session, first=first, world=world, cache=plan_cache,
                     key=plan_key)
        return await run.run(sel)




def staged_snapshot(pin: WeightsPin) -> Snapshot:
    """A staged revision as the store lists it: one weights file (its sha256 what `models-hash` answers)."""
    return Snapshot(pin, (WeightFile(WEIGHTS_FILE, 4_000_000, WEIGHTS_SHA),))


def store_listing(snapshots: Iterable[Snapshot], node: Node) -> str:
    """`models-list`'s answer (commands/models.py) for a store holding these revisions."""
    lines = []
    for snap in sorted(set(snapshots), key=lambda s: s.pin):
        lines += [f"R {snap.pin.store_dir(node.deploy_root)}", "M " + json.dumps(snap.to_json())]
    return "\n".join([*lines, "F 500000000"]) + "\n"


def _then(transport: ReplayTransport, key: str, nth: int, reply: Reply, action: Any) -> Reply:
    """The same reply, and after the Nth command of this kind, `action()` (a link dies, a signal)."""
    seen = {"n": 0}

    def answer(command: Any) -> Answer:
        seen["n"] += 1
        if callable(reply):
            got = reply(command)
        elif isinstance(reply, Answer):
            got = reply
        else:
            got = reply[min(seen["n"], len(reply)) - 1]
        if seen["n"] == nth:
            action()
        return got

    return answer


def on_command(transport: ReplayTransport, key: str, nth: int, action: Any) -> None:
    transport.replies[key] = _then(transport, key, nth, transport.replies.get(key, Answer()), action)


def _stopped(rows: str, service: str) -> str:
    out = []
    for line in rows.splitlines():
        data = json.loads(line)
        if f"com.docker.compose.service={service}," in data.get("Labels", "") + ",":
            data["State"], data["Status"] = "exited", "Exited (1) 3 seconds ago"
        out.append(json.dumps(data))
    return "\n".join(out) + "\n"


class FakeHaproxy:
    """HAProxy's runtime API as the front door's node answers it (clients/haproxy.py): `show stat`
    with every model server and its current sessions (`sessions`: server -> counts, one per
    look, the last repeated), `show info` with a worker pid that changes after each reload
    signal the node was sent, `set server` and `show servers state` as HAProxy answers them."""

    def __init__(self, transport: ReplayTransport, render: FleetRender,
                 sessions: dict[str, list[int]] | None = None, reload_takes: bool = True) -> None:
        self.transport, self.sessions, self.reload_takes = transport, dict(sessions or {}), reload_takes
        self.servers = [(m["backend"], i["name"]) for m in render_models(render) for i in m["instances"]]
        self.looks: dict[str, int] = {}

    def __call__(self, command: Any) -> Answer:
        text = command.argv[-1]
        if text == "show stat":
            return Answer(0, self.stat())
        if text == "show info":
            signals = sum(1 for c in self.transport.sent if c.label == "signal-service")
            return Answer(0, f"Name: HAProxy\nPid: {100 + (signals if self.reload_takes else 0)}\n")
        if text == "show servers state":
            return Answer(0, "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n")
        return Answer(0, "\n")  # an admin command that took

    def stat(self) -> str:
        rows = ["# pxname,svname,qcur,qmax,scur,smax,status"]
        for backend, server in self.servers:
            counts = self.sessions.get(server, [0])
            seen = self.looks[server] = self.looks.get(server, 0) + 1
            rows.append(f"{backend},{server},0,0,{counts[min(seen, len(counts)) - 1]},0,UP")
        return "\n".join(rows) + "\n"


def render_models(render: FleetRender) -> list[dict[str, Any]]:
    from orchestrator.render.fleet import fleet_view

    return list(fleet_view(render.all_services())["models"])
