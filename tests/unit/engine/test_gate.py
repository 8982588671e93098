"""The health gate: probes against a real local HTTP server, holding time, deadlines and heat."""

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
from orchestrator.engine.gate import Gate, GateFailed, dig
from orchestrator.events import EventBus
from orchestrator.render.fleet import render_fleet
from orchestrator.render.services import Port, Probe
from orchestrator.secrets import Secret
from orchestrator.transport.local import LocalTransport

REPO = Path(__file__).resolve().parents[3]


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


def local_service(port: int, probes: list[Probe], node: str = "n1"):
    base = render_fleet(load_project(REPO)).service("grafana")
    return replace(base, name="svc", node=node, address="127.0.0.1", ports=(Port(port=port, target=port),),
                   probes=tuple(probes), vars={}, healthy_deadline=None, min_healthy_time=None)


def run_gate(services, spec: GateSpec, limits=None, transport=None) -> EventBus:
    bus = EventBus()
    gate = Gate(services=services, transports={"n1": transport or LocalTransport("n1")},
                compose_files={"n1": "/nonexistent/compose.yml"}, spec=spec,
                secrets={"key": Secret(Service.key, "key")}, thermal_limits=limits or {}, bus=bus, phase=3)
    asyncio.run(gate.run())
    return bus


def test_gate_waits_for_service_to_turn_healthy_and_hold(server: int) -> None:
    svc = local_service(server, [Probe(kind="http", port=server, path="/health", status=200)])
    threading.Timer(2.0, lambda: setattr(Service, "status", 200)).start()
    bus = run_gate([svc], GateSpec(healthy_deadline=10, min_healthy_time=0.5, poll_interval=0.1))
    waiting = [e.message for e in bus.history if e.state == "waiting"]
    assert any("503" in m for m in waiting)
    assert any(e.state == "ok" and e.kind == "gate" for e in bus.history)


def test_gate_failure_names_service_node_probe_and_last_answer(server: int) -> None:
    svc = local_service(server, [Probe(kind="http", port=server, path="/health", status=200)])
    with pytest.raises(GateFailed) as err:
        run_gate([svc], GateSpec(healthy_deadline=1, min_healthy_time=0, poll_interval=0.1))
    message = str(err.value)
    assert "svc on n1" in message and f"GET :{server}/health expecting 200" in message and "503" in message


def test_bearer_and_json_expectations(server: int) -> None:
    good = Probe(kind="http", port=server, path="/v1/models", bearer_secret="key", json_field={"data.0.id": "m1"})
    run_gate([local_service(server, [good])], GateSpec(healthy_deadline=5, min_healthy_time=0, poll_interval=0.1))
    wrong = Probe(kind="http", port=server, path="/v1/models", bearer_secret="key", json_field={"data.0.id": "m2"})
    with pytest.raises(GateFailed, match="data.0.id = 'm1', expected 'm2'"):
        run_gate([local_service(server, [wrong])], GateSpec(healthy_deadline=1, min_healthy_time=0, poll_interval=0.1))


def test_tcp_probe_of_a_closed_port_fails() -> None:
    svc = local_service(1, [Probe(kind="tcp", port=1, timeout=0.5)])
    with pytest.raises(GateFailed, match="TCP :1"):
        run_gate([svc], GateSpec(healthy_deadline=1, min_healthy_time=0, poll_interval=0.1))


def test_hot_gpu_fails_the_gate_at_once(server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in nvidia-smi on PATH reports 90 C; the gate stops without waiting for its deadline."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, NVIDIA GeForce RTX 4090, 24564, 1000, 23564, 90, 550.54.15, 3'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    Service.status = 200
    svc = local_service(server, [Probe(kind="http", port=server, path="/health")])
    with pytest.raises(GateFailed, match="90 °C, at or above the 85 °C limit"):
        run_gate([svc], GateSpec(healthy_deadline=60, min_healthy_time=30, poll_interval=0.1), limits={"n1": 85})


def test_dig_walks_lists_and_dicts() -> None:
    assert dig({"a": [{"b": 3}]}, "a.0.b") == 3
    assert dig({"a": []}, "a.0.b") is None
