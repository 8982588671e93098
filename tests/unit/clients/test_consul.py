"""swarm's Consul client against the Consul stand-in (in-process, 127.0.0.1)."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from orchestrator.clients.consul import CheckSpec, ConsulClient, ServiceRegistration, worst
from orchestrator.errors import InputError, ServiceError
from orchestrator.lab.standins import consul as standin

TOKEN = "consul-mgmt-token-5f2a"


@pytest.fixture
def server() -> Iterator[standin.StandinServer]:
    srv = standin.serve("127.0.0.1", 0, node="oracle", mode="healthy")
    yield srv
    srv.shutdown()


@pytest.fixture
def client(server: standin.StandinServer, monkeypatch: pytest.MonkeyPatch) -> ConsulClient:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    return ConsulClient(server.url)


class Backend:
    """A tiny local HTTP service to be health-checked; `stop()` kills it."""

    def __init__(self) -> None:
        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/health"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def registration(**changes: Any) -> ServiceRegistration:
    base = ServiceRegistration(
        id="litellm@oracle",
        name="litellm",
        address="127.0.0.1",
        port=4000,
        tags=("phase-2", "api"),
        meta={"release": "20261122T1150Z-ab12", "node": "oracle", "image_digest": "sha256:abc"},
        check=CheckSpec("tcp", "127.0.0.1:1", interval="10s", timeout="2s"),
    )
    return dataclasses.replace(base, **changes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- models


def test_registration_is_frozen_and_builds_the_agent_payload() -> None:
    reg = registration()
    with pytest.raises(dataclasses.FrozenInstanceError):
        reg.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        reg.meta["node"] = "x"  # type: ignore[index]
    assert len({reg, registration()}) == 1
    assert reg.to_payload() == {
        "ID": "litellm@oracle",
        "Name": "litellm",
        "Address": "127.0.0.1",
        "Port": 4000,
        "Tags": ["phase-2", "api"],
        "Meta": {"release": "20261122T1150Z-ab12", "node": "oracle", "image_digest": "sha256:abc"},
        "Check": {"TCP": "127.0.0.1:1", "Interval": "10s", "Timeout": "2s"},
    }


def test_check_spec_validates() -> None:
    with pytest.raises(InputError, match="invalid duration"):
        CheckSpec("http", "http://x/", interval="10 seconds")
    with pytest.raises(InputError, match="http or tcp"):
        CheckSpec("grpc", "x")  # type: ignore[arg-type]


def test_worst_status() -> None:
    assert worst(["passing", "warning"]) == "warning"
    assert worst(["passing", "critical", "warning"]) == "critical"
    assert worst([]) == "passing"


# --------------------------------------------------------------------------- registration


def test_register_is_idempotent(client: ConsulClient) -> None:
    assert client.register(registration()) is True
    assert client.register(registration()) is False
    assert client.register(registration(tags=("phase-2",))) is True
    assert client.register(registration(tags=("phase-2",))) is False
    new_check = CheckSpec("tcp", "127.0.0.1:1", interval="5s", timeout="2s")
    assert client.register(registration(check=new_check)) is True
    assert client.register(registration(meta={"release": "other"})) is True
    assert client.register(registration(meta={"release": "other"})) is False
    assert client.register(registration(check=None)) is True
    assert client.register(registration(check=None)) is False
    agent = client.registered()["litellm@oracle"]
    assert agent["Meta"] == dict(registration().meta) and agent["Port"] == 4000


def test_register_replaces_checks(client: ConsulClient, server: standin.StandinServer) -> None:
    client.register(registration())
    client.register(registration(check=CheckSpec("http", "http://127.0.0.1:1/", "10s", "1s")))
    checks = server.agent.checks
    assert list(checks) == ["service:litellm@oracle"]
    assert checks["service:litellm@oracle"].kind == "http"


def test_deregister(client: ConsulClient) -> None:
    client.register(registration())
    assert client.deregister("litellm@oracle") is True
    assert client.deregister("litellm@oracle") is False
    assert client.registered() == {}


def test_registrations_snapshot_restores_exactly(client: ConsulClient) -> None:
    """A rollback re-registers what was there before: the snapshot carries the check too."""
    original = registration(
        check=CheckSpec("http", "http://127.0.0.1:1/health", "15s", "3s", deregister_after="1m")
    )
    client.register(original)
    snapshot = client.registrations()
    assert snapshot["litellm@oracle"] == original
    client.register(registration(tags=("changed",), check=None))
    assert client.register(snapshot["litellm@oracle"]) is True
    assert client.registrations()["litellm@oracle"] == original
    assert client.register(original) is False


# --------------------------------------------------------------------------- health


def test_services_with_health_per_instance(client: ConsulClient) -> None:
    backend = Backend()
    try:
        check = CheckSpec("http", backend.url, interval="1s", timeout="1s")
        client.register(
            registration(id="vllm@starlord", name="vllm", port=backend.port, check=check)
        )
        client.register(registration(id="litellm@oracle"))
        client.wait_status(["vllm@starlord"], "passing", timeout=5)
        health = {h.service_id: h for h in client.services_with_health()}
        assert set(health) == {"vllm@starlord", "litellm@oracle"}
        assert health["vllm@starlord"].status == "passing"
        assert health["litellm@oracle"].status == "critical"
        assert health["vllm@starlord"].node == "oracle"
        assert health["vllm@starlord"].meta["release"] == "20261122T1150Z-ab12"
        assert [c.check_id for c in health["vllm@starlord"].checks] == [
            "serfHealth",
            "service:vllm@starlord",
        ]
        assert [h.service_id for h in client.services_with_health(["vllm"])] == ["vllm@starlord"]
    finally:
        backend.stop()


def test_dead_service_turns_critical_within_two_intervals(client: ConsulClient) -> None:
    backend = Backend()
    check = CheckSpec("http", backend.url, interval="1s", timeout="1s")
    client.register(registration(port=backend.port, check=check))
    client.wait_status(["litellm@oracle"], "passing", timeout=5)
    backend.stop()
    start = time.monotonic()
    # polled often, so the figure is the check's own latency, not wait_status's backing off
    client.wait_status(["litellm@oracle"], "critical", timeout=2.5, sleep=lambda s: time.sleep(min(s, 0.05)))
    assert time.monotonic() - start <= 2.5


def test_wait_status_times_out_with_last_status(client: ConsulClient) -> None:
    client.register(registration())
    with pytest.raises(ServiceError) as caught:
        client.wait_status(["litellm@oracle", "ghost"], "passing", timeout=0.5)
    assert "litellm@oracle=critical" in caught.value.message
    assert "ghost=not registered" in caught.value.message


# --------------------------------------------------------------------------- failures and ACL


@pytest.fixture
def acl_server() -> Iterator[standin.StandinServer]:
    srv = standin.serve("127.0.0.1", 0, acl_token=TOKEN)
    yield srv
    srv.shutdown()


def test_acl_token_from_argument_and_env(
    acl_server: standin.StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    assert ConsulClient(acl_server.url, TOKEN).register(registration()) is True
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", TOKEN)
    assert ConsulClient(acl_server.url).register(registration()) is False
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "wrong-from-env")
    assert ConsulClient(acl_server.url, TOKEN).deregister("litellm@oracle") is True


def test_missing_acl_token_is_a_clear_error(
    acl_server: standin.StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    with pytest.raises(ServiceError) as caught:
        ConsulClient(acl_server.url).register(registration(check=None))
    # An anonymous caller sees an empty (filtered) agent, then is refused the write.
    err = caught.value
    assert acl_server.url in err.message and "permission denied" in err.message
    assert "CONSUL_HTTP_TOKEN" in (err.hint or "")


def test_unknown_acl_token(
    acl_server: standin.StandinServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "-".join(["bad", "token", "9c1e"])
    client = ConsulClient(acl_server.url, bad)
    with pytest.raises(ServiceError, match="does not know the ACL token") as caught:
        client.services_with_health()
    texts = [str(caught.value), repr(caught.value), *traceback.format_exception(caught.value)]
    texts += [repr(client), caplog.text]
    assert not any(bad in t for t in texts)


def test_unreachable_consul() -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceError) as caught:
        ConsulClient(addr, timeout=1).register(registration())
    assert f"Consul at {addr} is unreachable" in caught.value.message
    assert "consul.addr" in (caught.value.hint or "")


def test_consul_without_leader() -> None:
    srv = standin.serve("127.0.0.1", 0, mode="never-healthy")
    try:
        with pytest.raises(ServiceError, match="no cluster leader"):
            ConsulClient(srv.url).services_with_health()
    finally:
        srv.shutdown()


def test_something_that_is_not_consul() -> None:
    """A bare 404 without X-Consul-Index (e.g. a proxy on an unrouted address)."""

    class NotConsul(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NotConsul)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = ConsulClient(f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(ServiceError, match="not a Consul agent"):
            client.services_with_health()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_bad_address() -> None:
    with pytest.raises(InputError, match="not a Consul address"):
        ConsulClient("http://")


def test_acl_token_never_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    client = ConsulClient("http://198.18.0.254:8500", "acl-token-do-not-print")
    shown = repr(client) + repr(vars(client)) + repr(vars(client._consul)) + str(client.__dict__)
    assert "acl-token-do-not-print" not in shown
    assert client._consul.prepare_headers() == {"X-Consul-Token": "acl-token-do-not-print"}  # still sent


def test_token_file_readable_by_others_is_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.config.inventory import ConsulSettings

    token = tmp_path / "consul.token"
    token.write_text("t0ken\n")
    token.chmod(0o644)
    settings = ConsulSettings(addr="http://198.18.0.254:8500", token_file=str(token))
    with pytest.raises(InputError, match=r"readable by others \(mode 0644\)") as err:
        ConsulClient.from_inventory(settings, lambda p: tmp_path / p if p else None)
    assert err.value.hint == f"chmod 600 {token}"
    token.chmod(0o600)
    client = ConsulClient.from_inventory(settings, lambda p: tmp_path / p if p else None)
    assert client._consul.prepare_headers() == {"X-Consul-Token": "t0ken"}
