"""The health gate: HTTP/TCP probes against a real local server, container state from a replayed
node (answers recorded from the lab): hold times, deadlines, heat, and failing fast on crashes."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.config.playbook import GateSpec
from orchestrator.config.project import load_project
from orchestrator.engine.gate import Gate, GateFailed, GateTarget, NodeUnreachable, crash_reason
from orchestrator.events import EventBus
from orchestrator.facts.probes import dig
from orchestrator.facts.states import docker_time, parse_container_states
from orchestrator.render.fleet import render_fleet
from orchestrator.render.services import Port, Probe
from orchestrator.secrets import Secret
from orchestrator.transport.replay import Answer, ReplayTransport
from tests.unit.lab_answers import answer, state_rows, states

REPO = Path(__file__).resolve().parents[3]
RUNNING = {"status": "running", "restarting": "false", "restarts": "0", "health": ""}


class Service:
    status = 503
    key = "k-123"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v1/models":
            if self.headers.get("Authorization") != f"Bearer {Service.key}":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"data": [{"id": "m1"}]}).encode()
            code = 200
        else:
            body, code = b"ok", Service.status
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    Service.status = 503
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()


@pytest.fixture(scope="module")
def grafana():
    return render_fleet(load_project(REPO)).service("grafana")


def local_service(base, port: int, probes: list[Probe], name: str = "grafana", healthcheck: bool = False):
    compose = dict(base.compose)
    if not healthcheck:
        compose.pop("healthcheck", None)
    return replace(base, name=name, node="oracle", address="127.0.0.1", ports=(Port(port=port, target=port),),
                   probes=tuple(probes), vars={}, healthy_deadline=None, min_healthy_time=None, compose=compose)


def node(replies: dict, **kw) -> ReplayTransport:
    return ReplayTransport("oracle", replies=replies, **kw)


def running_node(name: str = "grafana") -> ReplayTransport:
    return node({"container-states": states("oracle", **{name: RUNNING})})


def run_gate(services, spec: GateSpec, transport: ReplayTransport, limit: float | None = None,
             bus: EventBus | None = None) -> EventBus:
    bus = bus or EventBus()
    gate = Gate(services=services, targets={"oracle": GateTarget(transport, "swarm-oracle", thermal_limit=limit)},
                spec=spec, secrets={"key": Secret(Service.key, "key")}, bus=bus, phase=3)
    asyncio.run(gate.run())
    return bus


FAST = dict(poll_interval=0.05)


def test_gate_waits_for_service_to_turn_healthy_and_hold(server: int, grafana) -> None:
    svc = local_service(grafana, server, [Probe(kind="http", port=server, path="/health", status=200)])
    threading.Timer(1.0, lambda: setattr(Service, "status", 200)).start()
    bus = run_gate([svc], GateSpec(healthy_deadline=10, min_healthy_time=0.5, **FAST), running_node())
    waiting = [e.message for e in bus.history if e.state == "waiting"]
    assert any("503" in m for m in waiting)
    assert any(e.state == "ok" and e.kind == "gate" for e in bus.history)


def test_gate_failure_names_service_node_probe_and_last_answer(server: int, grafana) -> None:
    svc = local_service(grafana, server, [Probe(kind="http", port=server, path="/health", status=200)])
    with pytest.raises(GateFailed) as err:
        run_gate([svc], GateSpec(healthy_deadline=0.5, min_healthy_time=0, **FAST), running_node())
    message = str(err.value)
    assert "grafana on oracle" in message and f"GET :{server}/health expecting 200" in message and "503" in message
    assert not err.value.at_once


def test_bearer_and_json_expectations(server: int, grafana) -> None:
    good = Probe(kind="http", port=server, path="/v1/models", bearer_secret="key", json_field={"data.0.id": "m1"})
    run_gate([local_service(grafana, server, [good])], GateSpec(healthy_deadline=5, min_healthy_time=0, **FAST),
             running_node())
    wrong = Probe(kind="http", port=server, path="/v1/models", bearer_secret="key", json_field={"data.0.id": "m2"})
    with pytest.raises(GateFailed, match="data.0.id = 'm1', expected 'm2'"):
        run_gate([local_service(grafana, server, [wrong])],
                 GateSpec(healthy_deadline=0.5, min_healthy_time=0, **FAST), running_node())


def test_tcp_probe_of_a_closed_port_fails(grafana) -> None:
    svc = local_service(grafana, 1, [Probe(kind="tcp", port=1, timeout=0.5)])
    with pytest.raises(GateFailed, match="TCP :1"):
        run_gate([svc], GateSpec(healthy_deadline=0.5, min_healthy_time=0, **FAST), running_node())


def test_hot_gpu_fails_the_gate_at_once(server: int, grafana) -> None:
    """The recorded nvidia-smi line, at 90 C: the gate stops without waiting for its deadline."""
    Service.status = 200
    recorded = answer("starlord", "nvidia-smi")
    hot = Answer(0, recorded.stdout.replace(", 41, ", ", 90, "))
    transport = node({"container-states": states("oracle", grafana=RUNNING), "nvidia-smi": hot})
    svc = local_service(grafana, server, [Probe(kind="http", port=server, path="/health")])
    with pytest.raises(GateFailed, match="90 °C, at or above the 85 °C limit"):
        run_gate([svc], GateSpec(healthy_deadline=60, min_healthy_time=30, **FAST), transport, limit=85)


# --------------------------------------------------------------------------- failing fast


def test_a_container_that_restarts_while_watched_fails_at_once(server: int, grafana) -> None:
    """Grafana exits a second after each start: each HTTP probe may land while it answers,
    but its restart count moves — healthy means it stayed up."""
    Service.status = 200
    rounds = [states("oracle", grafana=RUNNING),
              states("oracle", grafana={**RUNNING, "restarts": "1", "started": "2026-12-01T20:30:00.5Z"})]
    transport = node({"container-states": rounds,
                      "container-logs": Answer(0, "logger=server msg=starting\nfatal: bind: address in use\n")})
    svc = local_service(grafana, server, [Probe(kind="http", port=server, path="/health")])
    with pytest.raises(GateFailed) as err:
        run_gate([svc], GateSpec(healthy_deadline=300, min_healthy_time=60, **FAST), transport)
    assert err.value.at_once and "restarted while the gate watched it" in str(err.value)
    assert "fatal: bind: address in use" in str(err.value)  # the last log lines come with it
    assert transport.described({"container-states"}).count("container-states swarm-oracle " + _fmt(transport)) == 2


def _fmt(transport: ReplayTransport) -> str:
    return next(c for c in transport.sent if c.label == "container-states").describe().split(" ", 2)[2]


@pytest.mark.parametrize(("change", "reason"), [
    ({"status": "restarting", "restarting": "true", "restarts": "3"}, "is restarting (crash loop, 3 restarts)"),
    ({"status": "exited", "exit_code": "1"}, "exited with code 1"),
    ({**RUNNING, "health": "unhealthy"}, "compose health: unhealthy"),
])
def test_crash_states_fail_on_the_first_look(grafana, server: int, change: dict, reason: str) -> None:
    transport = node({"container-states": states("oracle", grafana=change)})
    svc = local_service(grafana, server, [Probe(kind="http", port=server, path="/health")])
    with pytest.raises(GateFailed) as err:
        run_gate([svc], GateSpec(healthy_deadline=300, min_healthy_time=10, **FAST), transport)
    assert err.value.at_once and reason in str(err.value)
    assert len(transport.described({"container-states"})) == 1


def test_a_fresh_container_that_already_restarted_fails(grafana, server: int) -> None:
    row = state_rows("oracle")["grafana"]
    created = docker_time(row["created"])
    assert created is not None
    transport = node({"container-states": states("oracle", grafana={**RUNNING, "restarts": "2"})})
    svc = local_service(grafana, server, [Probe(kind="http", port=server, path="/health")])
    gate = Gate(services=[svc], targets={"oracle": GateTarget(transport, "swarm-oracle", fresh_since=created - 5)},
                spec=GateSpec(healthy_deadline=300, min_healthy_time=10, **FAST), secrets={}, bus=EventBus(), phase=2)
    with pytest.raises(GateFailed, match="restarted 2 time"):
        asyncio.run(gate.run())


def test_a_loading_model_is_not_failed_early(grafana, server: int) -> None:
    """A vLLM reading its weights: running, compose health `starting`, HTTP refused. Its
    deadline holds: the gate fails only when it passes, with the probe's last answer."""
    loading = states("oracle", **{"vllm-backup": {**RUNNING, "health": "starting"}})
    transport = node({"container-states": loading})
    svc = local_service(grafana, 9, [Probe(kind="tcp", port=9, timeout=0.2)], name="vllm-backup",
                        healthcheck=True)
    bus = EventBus()
    with pytest.raises(GateFailed) as err:
        run_gate([svc], GateSpec(healthy_deadline=1.0, min_healthy_time=0, **FAST), transport, bus=bus)
    assert not err.value.at_once
    assert len(transport.described({"container-states"})) > 2
    progress = [e for e in bus.history if e.state == "progress"]
    assert progress and {"held", "min_healthy", "deadline_left"} <= set(progress[-1].data)


def test_a_node_that_stops_answering_fails_the_gate_naming_it(grafana, server: int) -> None:
    svc = local_service(grafana, server, [Probe(kind="http", port=server, path="/health")])
    with pytest.raises(NodeUnreachable, match="oracle is unreachable"):
        run_gate([svc], GateSpec(healthy_deadline=300, min_healthy_time=10, **FAST), node({}, dead=True))


def test_log_lines_in_a_failure_are_scrubbed(grafana, server: int) -> None:
    secret = Secret("grafana-admin-pw-7781", "grafana_admin_password")
    transport = node({"container-states": states("oracle", grafana={"status": "exited", "exit_code": "2"}),
                      "container-logs": Answer(0, f"login failed for admin:{secret.reveal()}\n")})
    svc = local_service(grafana, server, [Probe(kind="http", port=server, path="/health")])
    with pytest.raises(GateFailed) as err:
        run_gate([svc], GateSpec(healthy_deadline=300, min_healthy_time=10, **FAST), transport)
    assert secret.reveal() not in str(err.value) and "login failed for admin" in str(err.value)


# --------------------------------------------------------------------------- pure parts


def test_recorded_container_states_parse() -> None:
    rows = parse_container_states(answer("starlord", "container-states").stdout)
    assert {"vllm-primary", "vllm-secondary", "gpu-monitor", "qdrant"} <= set(rows)
    assert rows["vllm-primary"].health == "healthy" and rows["qdrant"].health == ""
    assert rows["vllm-primary"].created is not None and rows["vllm-primary"].restarts == 0


def test_crash_reason_baseline_rules() -> None:
    rows = parse_container_states(states("oracle", grafana=RUNNING).stdout)
    base = rows["grafana"]
    assert crash_reason(base, None, None) is None
    assert crash_reason(base, base, None) is None
    assert "replaced" in (crash_reason(replace(base, id="other"), base, None) or "")
    assert crash_reason(None, base, None) is not None


def test_docker_time_reads_nanoseconds() -> None:
    assert docker_time("1970-01-01T00:00:01.500000000Z") == pytest.approx(1.5)
    assert docker_time("0001-01-01T00:00:00Z") is None


def test_dig_walks_lists_and_dicts() -> None:
    assert dig({"a": [{"b": 3}]}, "a.0.b") == 3
    assert dig({"a": []}, "a.0.b") is None


def test_a_restore_gate_does_not_take_the_new_releases_short_deadline(server: int, grafana) -> None:
    """The operator staged `healthy_deadline: 1s` on the new release; the rollback brings the
    previous one back, which needs its 2 s to start: the restore gate waits the phase's deadline."""
    svc = replace(local_service(grafana, server, [Probe(kind="http", port=server, path="/health", status=200)]),
                  vars={"healthy_deadline": "1s"}, healthy_deadline=1.0)
    spec = GateSpec(healthy_deadline=30, min_healthy_time=0.2, **FAST)
    with pytest.raises(GateFailed):  # the new release's own gate: the instance's 1 s
        run_gate([svc], spec, running_node())
    threading.Timer(2.0, lambda: setattr(Service, "status", 200)).start()
    gate = Gate(services=[svc], targets={"oracle": GateTarget(running_node(), "swarm-oracle")}, spec=spec,
                secrets={}, bus=EventBus(), phase=3, hold_cap=3.0, what="restore", unwinding=True)
    asyncio.run(gate.run())  # healthy after 2 s: well inside the phase's 30 s
