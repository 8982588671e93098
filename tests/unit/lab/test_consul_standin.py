"""Conformance of the Consul stand-in, driven through py-consul and through raw HTTP.

Each test names the Consul documentation page behind the expectation
(https://developer.hashicorp.com/consul/api-docs/...). Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import consul
import consul.exceptions
import httpx
import pytest

from orchestrator.lab.standins import consul as standin

DOCS = "https://developer.hashicorp.com/consul/api-docs"


@pytest.fixture
def server() -> Iterator[standin.StandinServer]:
    srv = standin.serve("127.0.0.1", 0, node="oracle", mode="healthy")
    yield srv
    srv.shutdown()


@pytest.fixture
def client(server: standin.StandinServer) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=server.port)


@pytest.fixture
def http(server: standin.StandinServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as c:
        yield c


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Poll `pred` until true; returns the seconds it took; fails at the deadline."""
    start = time.monotonic()
    deadline = start + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


class Backend:
    """A tiny local HTTP service whose health answer can be toggled or stopped."""

    def __init__(self) -> None:
        self.status = 200
        backend = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(backend.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/health"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def check_status(client: consul.Consul, check_id: str) -> str | None:
    check = client.agent.checks().get(check_id)
    return None if check is None else check["Status"]


# --------------------------------------------------------------------------- agent/service


def test_register_accepts_any_key_casing(http: httpx.Client, client: consul.Consul) -> None:
    """agent/service#register-service: the body is decoded case-insensitively and snake_case
    aliases are accepted; Meta keys are user data and keep their case. The answer is 200 with
    an empty body."""
    bodies = [
        {"ID": "a", "Name": "web", "Port": 80, "Meta": {"Release": "r1"}},
        {"id": "b", "name": "web", "port": 81, "tags": ["x"], "meta": {"Release": "r2"}},
        {"Id": "c", "NAME": "web", "enable_tag_override": True, "Tags": []},
    ]
    for body in bodies:
        resp = http.put("/v1/agent/service/register", json=body)
        assert resp.status_code == 200 and resp.content == b""
    services = client.agent.services()
    assert services["a"]["Meta"] == {"Release": "r1"} and services["a"]["Port"] == 80
    assert services["b"]["Tags"] == ["x"] and services["b"]["Service"] == "web"
    assert services["c"]["EnableTagOverride"] is True
    assert set(services["a"]) >= {
        "ID",
        "Service",
        "Tags",
        "Meta",
        "Port",
        "Address",
        "Weights",
        "EnableTagOverride",
        "Datacenter",
    }


def test_register_without_name_is_400(http: httpx.Client) -> None:
    """agent/service#register-service: Name is required; errors are plain-text bodies."""
    resp = http.put("/v1/agent/service/register", json={"ID": "x"})
    assert resp.status_code == 400
    assert "Missing service name" in resp.text
    assert resp.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "[::]"])
def test_register_with_an_any_address_is_400(http: httpx.Client, address: str) -> None:
    """Consul's agent endpoint (and the catalog's) refuses a service address that is "any"
    (ipaddr.IsAny): 400 with the plain-text body "Invalid service address", nothing registered."""
    resp = http.put("/v1/agent/service/register", json={"Name": "web", "Address": address, "Port": 80})
    assert resp.status_code == 400 and resp.text.strip() == "Invalid service address"
    assert "web" not in http.get("/v1/agent/services").json()


def test_register_through_py_consul(client: consul.Consul) -> None:
    """agent/service#register-service via py-consul, which sends lowercase keys."""
    check = consul.Check.tcp("127.0.0.1", 1, "10s", timeout="1s")
    assert (
        client.agent.service.register(
            "db", service_id="db-1", address="127.0.0.1", port=5432, tags=["primary"], check=check
        )
        is True
    )
    assert client.agent.services()["db-1"]["Address"] == "127.0.0.1"


def test_deregister_unknown_service_is_404(http: httpx.Client, client: consul.Consul) -> None:
    """agent/service#deregister-service: an unknown service ID answers 404 (py-consul's boolean
    callback turns that into False)."""
    resp = http.put("/v1/agent/service/deregister/nope")
    assert resp.status_code == 404
    assert "Unknown service ID" in resp.text
    assert client.agent.service.deregister("nope") is False
    client.agent.service.register("web", service_id="web-1")
    assert client.agent.service.deregister("web-1") is True
    assert "web-1" not in client.agent.services()


def test_deregister_removes_the_service_checks(client: consul.Consul) -> None:
    """agent/service#deregister-service: "If there is an associated check, that is also
    deregistered"."""
    client.agent.service.register("web", service_id="web-1", check=consul.Check.ttl("10s"))
    assert "service:web-1" in client.agent.checks()
    client.agent.service.deregister("web-1")
    assert client.agent.checks() == {}


# --------------------------------------------------------------------------- checks


def test_new_checks_start_critical(client: consul.Consul) -> None:
    """agent/check#register-check, Status: "Specifies the initial status of the health check"
    - the default is critical. Service checks are named service:<id>."""
    client.agent.service.register("web", service_id="web-1", check=consul.Check.ttl("30s"))
    checks = client.agent.checks()
    assert checks["service:web-1"]["Status"] == "critical"
    assert checks["service:web-1"]["Name"] == "Service 'web' check"
    assert checks["service:web-1"]["ServiceName"] == "web"
    assert client.agent.check.ttl_pass("service:web-1", notes="fine") is True
    assert check_status(client, "service:web-1") == "passing"


def test_several_checks_get_numbered_ids(http: httpx.Client, client: consul.Consul) -> None:
    """agent/service#register-service, Checks: several checks get IDs service:<id>:1, :2 ..."""
    http.put(
        "/v1/agent/service/register",
        json={
            "Name": "web",
            "ID": "w",
            "Checks": [{"TTL": "10s"}, {"TTL": "20s", "Status": "passing"}],
        },
    )
    checks = client.agent.checks()
    assert checks["service:w:1"]["Status"] == "critical"
    assert checks["service:w:2"]["Status"] == "passing"


def test_replace_existing_checks(http: httpx.Client, client: consul.Consul) -> None:
    """agent/service#register-service, ?replace-existing-checks: "Missing health checks from the
    request will be deleted from the agent"; without it they are kept."""
    http.put(
        "/v1/agent/service/register",
        json={"Name": "web", "ID": "w", "Checks": [{"TTL": "10s"}, {"TTL": "20s"}]},
    )
    http.put("/v1/agent/service/register", json={"Name": "web", "ID": "w"})
    assert {"service:w:1", "service:w:2"} <= set(client.agent.checks())
    http.put(
        "/v1/agent/service/register?replace-existing-checks=true", json={"Name": "web", "ID": "w"}
    )
    assert client.agent.checks() == {}


def test_check_without_interval_is_400(http: httpx.Client) -> None:
    """agent/check#register-check: HTTP/TCP checks need an Interval."""
    resp = http.put(
        "/v1/agent/service/register", json={"Name": "web", "Check": {"HTTP": "http://127.0.0.1:1/"}}
    )
    assert resp.status_code == 400 and "Interval" in resp.text


def test_http_check_is_probed_and_follows_the_service(client: consul.Consul) -> None:
    """docs/services/usage/checks#http-checks: the agent GETs the URL every Interval; 2xx is
    passing, 429 warning, anything else or no answer critical. A dead service turns critical
    within two intervals, and back to passing when it answers again."""
    interval = 1.0
    backend = Backend()
    backend.status = 503   # the first probe is staggered by up to 1 s, maybe 0: critical either way
    try:
        client.agent.service.register(
            "web",
            service_id="web-1",
            port=1,
            check=consul.Check.http(backend.url, "1s", timeout="1s"),
        )
        assert check_status(client, "service:web-1") == "critical"
        backend.status = 200
        wait_until(lambda: check_status(client, "service:web-1") == "passing", 2 * interval + 1)
        backend.status = 429
        wait_until(lambda: check_status(client, "service:web-1") == "warning", 2 * interval + 1)
        backend.status = 200
        wait_until(lambda: check_status(client, "service:web-1") == "passing", 2 * interval + 1)
    finally:
        backend.stop()
    took = wait_until(lambda: check_status(client, "service:web-1") == "critical", 2 * interval + 1)
    assert took <= 2 * interval + 0.5
    output = client.agent.checks()["service:web-1"]["Output"]
    assert backend.url in output


def test_tcp_check_is_probed(client: consul.Consul) -> None:
    """docs/services/usage/checks#tcp-checks: passing while a TCP connect succeeds, critical
    once the port is closed."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    client.agent.service.register(
        "db", service_id="db-1", check=consul.Check.tcp("127.0.0.1", port, "1s", timeout="1s")
    )
    wait_until(lambda: check_status(client, "service:db-1") == "passing", 3)
    listener.close()
    wait_until(lambda: check_status(client, "service:db-1") == "critical", 3)


def test_agent_checks_carry_the_definition(client: consul.Consul) -> None:
    """agent/check#list-checks: each check has Type, Interval, Timeout and its Definition
    (the HTTP URL / TCP address), which swarm compares for idempotent registration."""
    client.agent.service.register(
        "web", service_id="w", check=consul.Check.http("http://127.0.0.1:1/", "10s", "2s")
    )
    check = client.agent.checks()["service:w"]
    assert check["Type"] == "http" and check["Interval"] == "10s" and check["Timeout"] == "2s"
    assert check["Definition"]["HTTP"] == "http://127.0.0.1:1/"
    assert check["Definition"]["Interval"] == "10s"


# --------------------------------------------------------------------------- health / catalog


def test_health_service_and_passing_filter(client: consul.Consul) -> None:
    """health#list-service-instances-for-service: entries of Node, Service, Checks (the node's
    serfHealth included); ?passing keeps only instances whose checks all pass."""
    client.agent.service.register("web", service_id="w1", check=consul.Check.ttl("30s"))
    client.agent.service.register("web", service_id="w2", check=consul.Check.ttl("30s"))
    client.agent.check.ttl_pass("service:w1")
    index, entries = client.health.service("web")
    assert int(index) > 0 and len(entries) == 2
    entry = next(e for e in entries if e["Service"]["ID"] == "w1")
    assert entry["Node"]["Node"] == "oracle"
    assert [c["CheckID"] for c in entry["Checks"]] == ["serfHealth", "service:w1"]
    _, passing = client.health.service("web", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["w1"]


def test_health_of_unknown_service_is_empty_list(http: httpx.Client) -> None:
    """health#list-service-instances-for-service: an unknown name is 200 [] with the
    X-Consul-Index header (py-consul's index=True callbacks raise without it)."""
    resp = http.get("/v1/health/service/nope")
    assert resp.status_code == 200 and resp.json() == []
    assert int(resp.headers["X-Consul-Index"]) > 0
    assert resp.headers["X-Consul-Knownleader"] == "true"
    assert resp.headers["X-Consul-Lastcontact"] == "0"


def test_health_state_lists_checks_in_that_state(client: consul.Consul, http: httpx.Client) -> None:
    """health#list-checks-in-state: `any` is the wildcard (the node's serfHealth included),
    passing/warning/critical filter by status, an unknown state matches no check (200 []),
    and py-consul's health.state() reads the same list."""
    client.agent.service.register("web", service_id="w1", check=consul.Check.ttl("30s"))
    client.agent.service.register("db", service_id="d1", check=consul.Check.ttl("30s"))
    client.agent.check.ttl_pass("service:w1")
    everything = http.get("/v1/health/state/any")
    assert everything.status_code == 200 and int(everything.headers["X-Consul-Index"]) > 0
    assert {c["CheckID"] for c in everything.json()} == {"serfHealth", "service:w1", "service:d1"}
    _, passing = client.health.state("passing")
    assert {c["CheckID"] for c in passing} == {"serfHealth", "service:w1"}
    critical = http.get("/v1/health/state/critical").json()
    assert [(c["CheckID"], c["ServiceName"]) for c in critical] == [("service:d1", "db")]
    assert http.get("/v1/health/state/warning").json() == []
    assert http.get("/v1/health/state/bogus").json() == []


def test_health_state_without_a_state_is_400(http: httpx.Client) -> None:
    """health#list-checks-in-state: the state is required (health_endpoint.go: "Missing check
    state")."""
    resp = http.get("/v1/health/state/")
    assert resp.status_code == 400 and resp.text == "Missing check state"


def test_register_with_unknown_check_status_is_400(http: httpx.Client, client: consul.Consul) -> None:
    """agent/service#register-service: a check's initial Status must be passing, warning or
    critical (agent_endpoint.go); nothing is registered. A known one is taken as given."""
    body = {"Name": "web", "ID": "w1", "Check": {"TTL": "30s", "Status": "bogus"}}
    resp = http.put("/v1/agent/service/register", json=body)
    assert resp.status_code == 400
    assert resp.text == "Status for checks must 'passing', 'warning', 'critical'"
    assert client.agent.services() == {}
    body["Check"]["Status"] = "warning"
    assert http.put("/v1/agent/service/register", json=body).status_code == 200
    assert check_status(client, "service:w1") == "warning"


def test_catalog_services_and_service(client: consul.Consul) -> None:
    """catalog#list-services (name -> tags, the consul service included) and
    catalog#list-nodes-for-service (flat Service* fields)."""
    client.agent.service.register(
        "web", service_id="w1", address="10.0.0.5", port=80, tags=["a"], meta={"release": "r1"}
    )
    _, services = client.catalog.services()
    assert services == {"consul": [], "web": ["a"]}
    _, nodes = client.catalog.service("web")
    assert nodes[0]["ServiceID"] == "w1" and nodes[0]["ServiceAddress"] == "10.0.0.5"
    assert nodes[0]["ServicePort"] == 80 and nodes[0]["ServiceMeta"] == {"release": "r1"}
    assert nodes[0]["Node"] == "oracle"
    _, none = client.catalog.service("nope")
    assert none == []


def test_blocking_query_waits_for_a_change(client: consul.Consul) -> None:
    """features/blocking: with ?index=N the read waits until the index moves past N (or
    `wait` expires) and answers with the new X-Consul-Index."""
    index, _ = client.catalog.services()
    threading.Timer(0.3, lambda: client.agent.service.register("late")).start()
    start = time.monotonic()
    new_index, services = client.catalog.services(index=index, wait="5s")
    assert "late" in services and int(new_index) > int(index)
    assert time.monotonic() - start < 4
    start = time.monotonic()
    same, _ = client.catalog.services(index=new_index, wait="300ms")
    assert same == new_index and time.monotonic() - start >= 0.25


# --------------------------------------------------------------------------- KV


def test_kv_put_get_and_cas(client: consul.Consul, http: httpx.Client) -> None:
    """kv#create-update-key: PUT answers `true`/`false`; ?cas=0 only creates, ?cas=N needs the
    current ModifyIndex. kv#read-key: Value is base64 (py-consul decodes it)."""
    assert client.kv.put("swarm/release", "r1", cas=0) is True
    assert client.kv.put("swarm/release", "r2", cas=0) is False
    index, entry = client.kv.get("swarm/release")
    assert entry["Value"] == b"r1" and entry["Key"] == "swarm/release"
    assert client.kv.put("swarm/release", "r3", cas=entry["ModifyIndex"] + 100) is False
    assert client.kv.put("swarm/release", "r3", cas=entry["ModifyIndex"]) is True
    raw = http.put("/v1/kv/swarm/release?cas=1", content=b"x")
    assert raw.status_code == 200 and raw.text == "false"
    body = http.get("/v1/kv/swarm/release").json()
    assert body[0]["Value"] == "cjM="  # base64("r3")


def test_kv_missing_key_is_404_with_index(http: httpx.Client, client: consul.Consul) -> None:
    """kv#read-key: a missing key is 404 with an empty body, and still carries X-Consul-Index
    (py-consul raises "Missing index header" otherwise)."""
    resp = http.get("/v1/kv/missing")
    assert resp.status_code == 404 and resp.content == b""
    assert "X-Consul-Index" in resp.headers and "X-Consul-Knownleader" in resp.headers
    index, value = client.kv.get("missing")
    assert value is None and int(index) > 0


def test_kv_recurse_keys_and_delete(client: consul.Consul) -> None:
    """kv#read-key (?recurse, ?keys, ?separator) and kv#delete-key (?recurse)."""
    for key in ("app/a", "app/b/c", "other"):
        client.kv.put(key, "v")
    _, entries = client.kv.get("app/", recurse=True)
    assert [e["Key"] for e in entries] == ["app/a", "app/b/c"]
    _, keys = client.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/a", "app/b/"]
    assert client.kv.delete("app/", recurse=True) is True
    assert client.kv.get("app/a")[1] is None and client.kv.get("other")[1] is not None


# --------------------------------------------------------------------------- status / ACL


def test_status_leader(client: consul.Consul, http: httpx.Client) -> None:
    """status#get-raft-leader: a JSON string "ip:port"."""
    assert client.status.leader() == "127.0.0.1:8300"
    assert http.get("/v1/status/leader").headers["content-type"] == "application/json"


def test_acl_token_is_required_when_configured() -> None:
    """api-structure#authentication and acl docs: writes without a token are 403 "Permission
    denied"; an unknown token is 403 "ACL not found"; anonymous list reads are filtered
    (X-Consul-Results-Filtered-By-ACLs); X-Consul-Token with the right token works."""
    srv = standin.serve("127.0.0.1", 0, acl_token="s3cret-mgmt")
    try:
        anon = consul.Consul(host="127.0.0.1", port=srv.port)
        anon.token = None
        with pytest.raises(consul.exceptions.ACLPermissionDenied, match="Permission denied"):
            anon.agent.service.register("web")
        wrong = consul.Consul(host="127.0.0.1", port=srv.port, token="nope")
        wrong.token = "nope"
        with pytest.raises(consul.exceptions.ACLPermissionDenied, match="ACL not found"):
            wrong.agent.services()
        good = consul.Consul(host="127.0.0.1", port=srv.port)
        good.token = "s3cret-mgmt"
        assert good.agent.service.register("web") is True
        resp = httpx.get(f"{srv.url}/v1/agent/services")
        assert resp.json() == {} and resp.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        resp = httpx.get(f"{srv.url}/v1/agent/services", headers={"X-Consul-Token": "s3cret-mgmt"})
        assert "web" in resp.json()
        assert httpx.get(f"{srv.url}/v1/status/leader").status_code == 200
    finally:
        srv.shutdown()


def test_unknown_path_and_method(http: httpx.Client) -> None:
    """Consul answers unknown paths with 404 "404 page not found" and wrong methods with 405."""
    assert http.get("/v1/nope").status_code == 404
    assert http.get("/v1/agent/service/register").status_code in (404, 405)
    assert http.delete("/v1/agent/services").status_code == 405
    assert http.post("/v1/agent/service/register", json={"Name": "x"}).status_code == 405


# --------------------------------------------------------------------------- modes, CLI, data


def test_never_healthy_mode_has_no_leader() -> None:
    """SWARM_STANDIN_MODE=never-healthy: like a Consul without a leader - catalog reads answer
    500 "No cluster leader"; status/leader answers 503 so health probes fail."""
    srv = standin.serve("127.0.0.1", 0, mode="never-healthy")
    try:
        assert httpx.get(f"{srv.url}/v1/status/leader").status_code == 503
        resp = httpx.get(f"{srv.url}/v1/catalog/services")
        assert resp.status_code == 500 and "No cluster leader" in resp.text
    finally:
        srv.shutdown()


def refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
    except httpx.TransportError:
        return True
    return False


def test_slow_start_keeps_the_port_closed() -> None:
    """SWARM_STANDIN_MODE=slow-start:N: connections are refused for N seconds, then served."""
    srv = standin.serve("127.0.0.1", 0, mode="slow-start:2")  # room for the first refused() on a loaded machine
    try:
        assert refused(f"{srv.url}/v1/status/leader")
        wait_until(lambda: not refused(f"{srv.url}/v1/status/leader"), 5)
        assert httpx.get(f"{srv.url}/v1/status/leader").json() == "127.0.0.1:8300"
    finally:
        srv.shutdown()


def test_die_after_stops_serving() -> None:
    srv = standin.serve("127.0.0.1", 0, mode="die-after:0.3")
    wait_until(lambda: refused(f"{srv.url}/v1/status/leader"), 5)


def test_command_line_of_the_real_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hashicorp/consul image runs `agent -dev -client 0.0.0.0`; unknown flags are ignored."""
    monkeypatch.delenv("CONSUL_LOCAL_CONFIG", raising=False)
    host, port, config, _ = standin.config_from_args(
        [
            "agent",
            "-dev",
            "-client",
            "0.0.0.0",
            "-ui",
            "-node=oracle",
            "-bind",
            "198.18.0.2",
            "-retry-join",
            "x",
            "--future-flag=1",
            "-http-port",
            "8501",
        ]
    )
    assert (host, port, config.node, config.node_address) == (
        "0.0.0.0",
        8501,
        "oracle",
        "198.18.0.2",
    )
    host, port, config, _ = standin.config_from_args(
        ["--host", "127.0.0.1", "--port", "0", "--acl-token", "t", "--data", "/tmp/x.json"]
    )
    assert (host, port, config.acl_token, config.data_file) == ("127.0.0.1", 0, "t", "/tmp/x.json")
    monkeypatch.setenv(
        "CONSUL_LOCAL_CONFIG", json.dumps({"acl": {"tokens": {"initial_management": "m"}}})
    )
    assert standin.config_from_args(["agent", "-dev"])[2].acl_token == "m"


def test_config_file_of_the_role(tmp_path: Path) -> None:
    """The swarm role runs `agent -config-file=/consul/config/swarm.hcl` (HCL with datacenter,
    data_dir, client_addr, advertise_addr, ports.http, acl tokens); JSON config works too."""
    hcl = tmp_path / "swarm.hcl"
    hcl.write_text(
        'datacenter       = "homelab"\n'
        'data_dir         = "/consul/data"\n'
        "server           = true\n"
        'client_addr      = "0.0.0.0"\n'
        'advertise_addr   = "198.18.0.10"\n'
        "ui_config {\n  enabled = true\n}\n"
        "ports {\n  http = 8501\n}\n"
        'acl {\n  enabled = true\n  tokens {\n    initial_management = "m"\n  }\n}\n'
    )
    host, port, config, _ = standin.config_from_args(["agent", f"-config-file={hcl}"])
    assert (host, port, config.datacenter, config.node_address) == (
        "0.0.0.0",
        8501,
        "homelab",
        "198.18.0.10",
    )
    assert config.acl_token == "m"
    assert config.data_file == "/consul/data/swarm-consul-standin.json"
    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    (conf_dir / "a.json").write_text(json.dumps({"node_name": "oracle", "ports": {"http": 8600}}))
    _, port, config, _ = standin.config_from_args(["agent", "-config-dir", str(conf_dir)])
    assert (port, config.node, config.acl_token) == (8600, "oracle", None)


def test_data_file_keeps_services_and_kv(tmp_path: Path) -> None:
    """--data FILE: registrations and KV survive a restart."""
    data = str(tmp_path / "consul.json")
    srv = standin.serve("127.0.0.1", 0, data_file=data)
    c = consul.Consul(host="127.0.0.1", port=srv.port)
    c.agent.service.register("web", service_id="w1", check=consul.Check.ttl("10s"))
    c.kv.put("k", "v")
    srv.shutdown()
    srv = standin.serve("127.0.0.1", 0, data_file=data)
    try:
        c = consul.Consul(host="127.0.0.1", port=srv.port)
        assert "w1" in c.agent.services() and "service:w1" in c.agent.checks()
        assert c.kv.get("k")[1]["Value"] == b"v"
    finally:
        srv.shutdown()


# --------------------------------------------------------------------------- as a process


def start_process(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """Run the stand-in file with `python -I -S` (no site-packages: proves it is stdlib-only)."""
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", standin.__file__, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        line = proc.stdout.readline() if ready else ""
        match = re.search(r"http=127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"stand-in did not start: {proc.stdout.read()}")


def test_runs_as_the_image_entrypoint_and_stops_on_sigterm() -> None:
    """`consul agent -dev -client ...` as a process: serves, and exits 0 on SIGTERM (as PID 1
    in a container SIGTERM would otherwise be ignored)."""
    env = {"PATH": os.environ.get("PATH", ""), "SWARM_STANDIN_MODE": "healthy"}
    proc, port = start_process(["agent", "-dev", "-client", "127.0.0.1", "-ui", "--port", "0"], env)
    try:
        c = consul.Consul(host="127.0.0.1", port=port)
        wait_until(lambda: not refused(f"http://127.0.0.1:{port}/v1/status/leader"), 5)
        assert c.agent.service.register("web") is True
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_die_after_exits_1_as_a_process() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "SWARM_STANDIN_MODE": "die-after:0.3"}
    proc, _ = start_process(["agent", "-dev", "-client", "127.0.0.1", "--port", "0"], env)
    assert proc.wait(timeout=5) == 1


def test_version_command() -> None:
    out = subprocess.run(
        [sys.executable, "-I", "-S", standin.__file__, "version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert out.stdout.startswith("Consul v1.17")
