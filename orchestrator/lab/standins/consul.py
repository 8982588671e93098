#!/usr/bin/env python3
"""Consul HTTP API stand-in for the swarm lab and tests (stdlib only, one file).

No Consul binary can be installed on the lab machines, so this server speaks the
part of Consul's HTTP API that swarm uses, the way a single-node `consul agent -dev`
answers it (https://developer.hashicorp.com/consul/api-docs):

- agent: service register/deregister, services, service/<id>, checks, TTL check updates
- health/service/<name> (?passing, ?tag), health/state/<state> (any, passing, warning,
  critical), catalog/services, catalog/service/<name>
- kv/<key> get/put/delete (?cas, ?recurse, ?keys, ?flags), status/leader, status/peers
- blocking queries (?index=&wait=) on health, catalog and KV reads
- X-Consul-Index / -Knownleader / -Lastcontact headers on those reads, 404 included
- ACLs: with an initial management token every request needs it; anonymous writes
  get 403, anonymous list reads are filtered (as with default_policy = "deny")
- HTTP and TCP checks are probed on their interval by background threads, so a
  service that dies turns critical and a recovered one turns passing again

Not modelled: several nodes/datacenters (one agent = one server node), gossip, sessions
and locks, prepared queries, DNS, `DeregisterCriticalServiceAfter` reaping, script /
gRPC / Docker checks (accepted, never run), ACL policies (one management token),
`?filter=` expressions (ignored).

Each behaviour follows the page of the API docs it implements (https://developer.hashicorp.com/consul/api-docs/<page>,
and Consul's agent/*_endpoint.go for the exact error texts): agent/service
(register: a check `Status` other than passing/warning/critical is refused with 400
"Status for checks must 'passing', 'warning', 'critical'", as agent_endpoint.go does),
agent/check (TTL updates), health ("List Checks in State": `any` is the wildcard, an
unknown state matches nothing, an empty one is 400 "Missing check state"; the agent's
own `serfHealth` check is listed as on a real node), catalog, kv, status, and
features/blocking for `?index=&wait=`.

Register bodies are accepted with keys in any casing (PascalCase, lowercase or
snake_case), as Consul's decoder does. It runs in-process for tests via
`serve(host, port)` and as the `hashicorp/consul` image's entrypoint via `main()`,
accepting the usual command lines: `agent -dev -client 0.0.0.0 ...` (the image's
default) and `agent -config-file=F` / `-config-dir=D` (HCL or JSON: datacenter,
node_name, client_addr, advertise_addr, data_dir, ports.http, acl tokens), plus
`--host/--port/--acl-token/--data FILE`; unknown flags are ignored.

Faults are staged with env SWARM_STANDIN_MODE, as for every lab stand-in:
healthy (default); never-healthy (listens, but has no cluster leader: catalog, health
and KV reads answer 500 "No cluster leader" and `status/leader` answers 503);
die-after:SECONDS (exit 1; in-process: stop serving); slow-start:SECONDS (the port
stays closed that long).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

VERSION = "1.17.3"
PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
CHECK_STATES = (PASSING, WARNING, CRITICAL)
ANY_STATE = "any"
MAX_WAIT_S = 600.0
DEFAULT_WAIT_S = 300.0
DEFAULT_CHECK_TIMEOUT_S = 10.0

# Canonical field names of a service definition and a check definition. Consul's
# decoder matches keys case-insensitively and also accepts snake_case aliases.
SERVICE_FIELDS = (
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Check",
    "Checks",
    "EnableTagOverride",
    "Weights",
    "TaggedAddresses",
    "Kind",
    "Proxy",
    "Connect",
    "SocketPath",
    "Locality",
)
CHECK_FIELDS = (
    "CheckID",
    "Name",
    "Notes",
    "Status",
    "HTTP",
    "Method",
    "Header",
    "Body",
    "TCP",
    "TTL",
    "Interval",
    "Timeout",
    "DeregisterCriticalServiceAfter",
    "TLSSkipVerify",
    "TLSServerName",
    "ServiceID",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "FailuresBeforeWarning",
    "Args",
    "ScriptArgs",
    "GRPC",
    "GRPCUseTLS",
    "H2PING",
    "UDP",
    "DockerContainerID",
    "Shell",
    "OutputMaxSize",
    "AliasService",
    "AliasNode",
)
CHECK_ALIASES = {"id": "CheckID", "script": "Args"}
# Maps whose keys are user data and must keep their case.
OPAQUE_MAPS = {"Meta", "Header", "TaggedAddresses", "Proxy", "Connect", "Locality", "Weights"}


class ApiError(Exception):
    """An HTTP error answer: Consul sends plain text bodies for errors."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


# --------------------------------------------------------------------------- parsing


def parse_duration(value: Any) -> float:
    """Seconds from a Go duration ("10s", "1m30s", "500ms") or integer nanoseconds."""
    if value in (None, ""):
        return 0.0
    if isinstance(value, (int, float)):
        return float(value) / 1e9
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"([\d.]+)(ns|us|µs|ms|s|m|h)", str(value))
    if not parts or "".join(n + u for n, u in parts) != str(value):
        raise ApiError(400, f'Request decode failed: time: invalid duration "{value}"')
    return sum(float(n) * units[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """Go's time.Duration.String(): 0s, 500ms, 1.5s, 1m30s, 1h0m0s."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:g}s"
    if hours or minutes:
        text = f"{int(minutes)}m" + text
    if hours:
        text = f"{int(hours)}h" + text
    return text


def _key_index(fields: tuple[str, ...], aliases: dict[str, str]) -> dict[str, str]:
    index = {name.lower(): name for name in fields}
    index.update(aliases)
    return index


SERVICE_KEYS = _key_index(SERVICE_FIELDS, {"service": "Name"})
CHECK_KEYS = _key_index(CHECK_FIELDS, CHECK_ALIASES)


def canonical(body: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    """Rename keys in any casing / snake_case to Consul's canonical field names."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        name = keys.get(key.lower().replace("_", ""), key)
        out[name] = value
    return out


ANY_ADDRESSES = frozenset({"0.0.0.0", "::", "[::]"})


def parse_service(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "Request decode failed: body must be a JSON object")
    svc = canonical(body, SERVICE_KEYS)
    if not svc.get("Name"):
        raise ApiError(400, "Missing service name")
    # agent/agent_endpoint.go AgentRegisterService: "Check the service address here and in the
    # catalog RPC endpoint" - ipaddr.IsAny (0.0.0.0, ::, [::]) is 400 "Invalid service address"
    if str(svc.get("Address") or "") in ANY_ADDRESSES:
        raise ApiError(400, "Invalid service address")
    checks = list(svc.get("Checks") or [])
    if svc.get("Check"):
        checks.insert(0, svc["Check"])
    svc["Checks"] = [canonical(c, CHECK_KEYS) for c in checks if isinstance(c, dict)]
    svc["ID"] = svc.get("ID") or svc["Name"]
    return svc


def check_type(check: dict[str, Any]) -> str:
    for kind in ("HTTP", "TCP", "TTL", "GRPC", "H2PING", "UDP", "DockerContainerID", "Args"):
        if check.get(kind):
            return {"DockerContainerID": "docker", "Args": "script"}.get(kind, kind.lower())
    return ""


def validate_check(check: dict[str, Any]) -> None:
    kind = check_type(check)
    if kind == "ttl":
        if parse_duration(check.get("TTL")) <= 0:
            raise ApiError(400, "Invalid check: TTL must be > 0 for TTL checks")
        return
    if not kind:
        raise ApiError(
            400,
            "Invalid check: Must provide TTL or Script/DockerContainerID/HTTP/TCP/GRPC/H2PING/UDP and Interval!",
        )
    if parse_duration(check.get("Interval")) <= 0:
        raise ApiError(
            400,
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks",
        )
    parse_duration(check.get("Timeout"))


def validate_status(check: dict[str, Any]) -> None:
    """An initial `Status` must be one Consul knows (agent_endpoint.go, AgentRegisterService)."""
    status = check.get("Status")
    if status and status not in CHECK_STATES:
        raise ApiError(400, "Status for checks must 'passing', 'warning', 'critical'")


# --------------------------------------------------------------------------- state


@dataclass
class Check:
    """One check registered with the agent, with its live status."""

    check_id: str
    name: str
    definition: dict[str, Any]
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    status: str = CRITICAL
    output: str = ""
    notes: str = ""
    create_index: int = 0
    modify_index: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def kind(self) -> str:
        return check_type(self.definition)

    def to_json(self, node: str) -> dict[str, Any]:
        d = self.definition
        return {
            "Node": node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(self.service_tags),
            "Type": self.kind,
            "Interval": _dur_text(d.get("Interval")),
            "Timeout": _dur_text(d.get("Timeout")),
            "ExposedPort": 0,
            "Definition": self.definition_json(),
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }

    def definition_json(self) -> dict[str, Any]:
        """The check's definition as Consul's HealthCheckDefinition serialises it."""
        d = self.definition
        return {
            "Interval": format_duration(parse_duration(d.get("Interval"))),
            "Timeout": format_duration(parse_duration(d.get("Timeout"))),
            "DeregisterCriticalServiceAfter": format_duration(
                parse_duration(d.get("DeregisterCriticalServiceAfter"))
            ),
            "HTTP": d.get("HTTP") or "",
            "Header": d.get("Header"),
            "Method": d.get("Method") or "",
            "Body": d.get("Body") or "",
            "TLSServerName": d.get("TLSServerName") or "",
            "TLSSkipVerify": bool(d.get("TLSSkipVerify")),
            "TCP": d.get("TCP") or "",
            "UDP": d.get("UDP") or "",
            "GRPC": d.get("GRPC") or "",
            "GRPCUseTLS": bool(d.get("GRPCUseTLS")),
        }


def _dur_text(value: Any) -> str:
    return format_duration(parse_duration(value)) if value else ""


@dataclass
class Service:
    """One service instance registered with the agent."""

    definition: dict[str, Any]
    create_index: int = 0
    modify_index: int = 0

    @property
    def sid(self) -> str:
        return str(self.definition["ID"])

    @property
    def name(self) -> str:
        return str(self.definition["Name"])

    @property
    def tags(self) -> list[str]:
        return list(self.definition.get("Tags") or [])

    def agent_json(self, datacenter: str) -> dict[str, Any]:
        d = self.definition
        out: dict[str, Any] = {
            "ID": self.sid,
            "Service": self.name,
            "Tags": self.tags,
            "Meta": dict(d.get("Meta") or {}),
            "Port": int(d.get("Port") or 0),
            "Address": d.get("Address") or "",
            "Weights": d.get("Weights") or {"Passing": 1, "Warning": 1},
            "EnableTagOverride": bool(d.get("EnableTagOverride")),
            "Datacenter": datacenter,
        }
        if d.get("TaggedAddresses"):
            out["TaggedAddresses"] = d["TaggedAddresses"]
        if d.get("Kind"):
            out["Kind"] = d["Kind"]
        return out

    def health_json(self) -> dict[str, Any]:
        out = self.agent_json("dc1")
        out.pop("Datacenter")
        out.update({"CreateIndex": self.create_index, "ModifyIndex": self.modify_index})
        return out


@dataclass
class KVEntry:
    value: bytes | None
    flags: int
    create_index: int
    modify_index: int
    lock_index: int = 0

    def to_json(self, key: str) -> dict[str, Any]:
        value = base64.b64encode(self.value).decode() if self.value else None
        return {
            "LockIndex": self.lock_index,
            "Key": key,
            "Flags": self.flags,
            "Value": value,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class Config:
    node: str = field(default_factory=socket.gethostname)
    node_address: str = "127.0.0.1"
    datacenter: str = "dc1"
    acl_token: str | None = None
    data_file: str | None = None
    mode: str = "healthy"


class Agent:
    """The agent's state: services, checks, KV, the raft index, and check probes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.node_id = str(uuid.uuid4())
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}
        self.kv: dict[str, KVEntry] = {}
        self.index = 1
        self.cond = threading.Condition()
        self.serf_index = 1
        self.save_failed = False
        self._load()

    # --- index and persistence

    def bump(self) -> int:
        """Advance the raft index and wake blocking queries; call with cond held."""
        self.index += 1
        self.cond.notify_all()
        return self.index

    def wait_for_change(self, min_index: int, wait_s: float) -> None:
        deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
        with self.cond:
            while self.index <= min_index:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.cond.wait(left)

    def _load(self) -> None:
        path = self.config.data_file
        if not path or not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        self.index = int(data.get("index", 1))
        for key, entry in data.get("kv", {}).items():
            raw = entry.pop("value")
            value = base64.b64decode(raw) if raw is not None else None
            self.kv[key] = KVEntry(value=value, **entry)
        for svc in data.get("services", []):
            self.add_service(svc, replace_checks=True, persist=False)

    def save(self) -> None:
        """Write services and KV to the data file (call with cond held)."""
        path = self.config.data_file
        if not path:
            return
        kv = {
            k: {
                "value": base64.b64encode(e.value).decode() if e.value is not None else None,
                "flags": e.flags,
                "create_index": e.create_index,
                "modify_index": e.modify_index,
                "lock_index": e.lock_index,
            }
            for k, e in self.kv.items()
        }
        data = {
            "index": self.index,
            "kv": kv,
            "services": [s.definition for s in self.services.values()],
        }
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, path)
        except OSError as err:
            # A read-only data dir must not take the API down: keep serving from memory.
            if not self.save_failed:
                print(f"consul-standin: cannot persist to {path}: {err}", flush=True)
            self.save_failed = True

    # --- health of the agent itself (fault modes)

    def has_leader(self) -> bool:
        """False in never-healthy mode: the agent behaves as if no leader was ever elected."""
        return self.config.mode != "never-healthy"

    # --- services and checks

    def add_service(self, body: Any, replace_checks: bool, persist: bool = True) -> None:
        svc_def = parse_service(body)
        for check in svc_def["Checks"]:
            validate_check(check)
        for check in svc_def["Checks"]:
            validate_status(check)
        with self.cond:
            old = self.services.get(svc_def["ID"])
            index = self.bump()
            svc = Service(
                svc_def, create_index=old.create_index if old else index, modify_index=index
            )
            self.services[svc.sid] = svc
            new_ids = self._register_service_checks(svc, index)
            if replace_checks:
                # Without ?replace-existing-checks Consul keeps checks missing from the body.
                self._drop_stale_checks(svc.sid, new_ids)
            if persist:
                self.save()

    def _register_service_checks(self, svc: Service, index: int) -> set[str]:
        defs = svc.definition["Checks"]
        ids: set[str] = set()
        for n, check_def in enumerate(defs, start=1):
            default_id = f"service:{svc.sid}" if len(defs) == 1 else f"service:{svc.sid}:{n}"
            check_id = str(check_def.get("CheckID") or default_id)
            name = str(check_def.get("Name") or f"Service '{svc.name}' check")
            ids.add(check_id)
            self._put_check(
                Check(
                    check_id=check_id,
                    name=name,
                    definition=check_def,
                    service_id=svc.sid,
                    service_name=svc.name,
                    service_tags=svc.tags,
                    notes=check_def.get("Notes") or "",
                    status=check_def.get("Status") or CRITICAL,
                    create_index=index,
                    modify_index=index,
                )
            )
        return ids

    def _put_check(self, check: Check) -> None:
        old = self.checks.get(check.check_id)
        if old is not None:
            old.stop.set()
            if old.definition == check.definition:
                # Consul keeps the status of a re-registered, unchanged check.
                check.status, check.output = old.status, old.output
                check.create_index = old.create_index
        self.checks[check.check_id] = check
        if check.kind in ("http", "tcp"):
            threading.Thread(
                target=self._probe_loop, args=(check,), daemon=True, name=f"check-{check.check_id}"
            ).start()

    def _drop_stale_checks(self, service_id: str, keep: set[str]) -> None:
        for cid, check in list(self.checks.items()):
            if check.service_id == service_id and cid not in keep:
                check.stop.set()
                del self.checks[cid]

    def remove_service(self, service_id: str) -> None:
        with self.cond:
            if service_id not in self.services:
                raise ApiError(
                    404,
                    f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                    "not the service name.",
                )
            del self.services[service_id]
            self._drop_stale_checks(service_id, set())
            self.bump()
            self.save()

    def set_check_status(self, check_id: str, status: str, output: str) -> None:
        with self.cond:
            check = self.checks.get(check_id)
            if check is None:
                raise ApiError(
                    404,
                    f'Unknown check ID "{check_id}". Ensure that the check ID is '
                    "passed, not the check name.",
                )
            self._update_status(check, status, output)

    def _update_status(self, check: Check, status: str, output: str) -> None:
        """Record a probe result; only a change of status advances the index."""
        check.output = output
        if check.status != status and self.checks.get(check.check_id) is check:
            check.status = status
            check.modify_index = self.bump()

    # --- probing

    def _probe_loop(self, check: Check) -> None:
        interval = parse_duration(check.definition.get("Interval"))
        timeout = parse_duration(check.definition.get("Timeout")) or DEFAULT_CHECK_TIMEOUT_S
        # Consul staggers the first run randomly within one interval.
        if check.stop.wait(random.uniform(0, min(interval, 1.0))):
            return
        while not check.stop.is_set():
            status, output = probe(check.definition, check.kind, timeout)
            with self.cond:
                self._update_status(check, status, output)
            check.stop.wait(interval)

    def stop_probes(self) -> None:
        with self.cond:
            for check in self.checks.values():
                check.stop.set()


def probe(definition: dict[str, Any], kind: str, timeout: float) -> tuple[str, str]:
    if kind == "http":
        return probe_http(definition, timeout)
    return probe_tcp(str(definition["TCP"]), timeout)


def probe_http(definition: dict[str, Any], timeout: float) -> tuple[str, str]:
    """Consul's HTTP check: 2xx passing, 429 warning, anything else critical."""
    url = str(definition["HTTP"])
    method = str(definition.get("Method") or "GET")
    parts = urlsplit(url)
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = {"User-Agent": "Consul Health Check", "Accept": "text/plain, text/*, */*"}
    for name, values in (definition.get("Header") or {}).items():
        headers[name] = ", ".join(values) if isinstance(values, list) else str(values)
    try:
        conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
        try:
            conn.request(method, path, body=definition.get("Body") or None, headers=headers)
            resp = conn.getresponse()
            body = resp.read(4096).decode("utf-8", "replace")
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as err:
        return CRITICAL, f'Get "{url}": {err}'
    output = f"HTTP {method} {url}: {resp.status} {resp.reason} Output: {body}"
    if 200 <= resp.status < 300:
        return PASSING, output
    if resp.status == 429:
        return WARNING, output
    return CRITICAL, output


def probe_tcp(target: str, timeout: float) -> tuple[str, str]:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as err:
        return CRITICAL, f"dial tcp {target}: {err}"
    return PASSING, f"TCP connect {target}: Success"


# --------------------------------------------------------------------------- HTTP layer


Route = tuple[str, "re.Pattern[str]", Callable[..., None]]


class Handler(BaseHTTPRequestHandler):
    """Routes /v1/... requests to small endpoint methods."""

    server: StandinServer
    protocol_version = "HTTP/1.1"

    # --- plumbing

    @property
    def agent(self) -> Agent:
        return self.server.agent

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            sys.stderr.write("consul-standin: " + (format % args) + "\n")

    def send_response(self, code: int, message: str | None = None) -> None:
        """Status line and Date only: Go's net/http sends no Server header."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.query = parse_qs(parts.query, keep_blank_values=True)
        path = unquote(parts.path)
        self.extra_headers: dict[str, str] = {}
        try:
            self.body = self._read_body()
            for verb, pattern, func in ROUTES:
                match = pattern.fullmatch(path)
                if match and verb == method:
                    func(self, *match.groups())
                    return
            if any(p.fullmatch(path) for _, p, _ in ROUTES):
                raise ApiError(405, f"method {method} not allowed")
            raise ApiError(404, "404 page not found")
        except ApiError as err:
            self.send_text(err.status, err.text)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        # Consul registers these endpoints for PUT only: POST is 405, as there.
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def send_raw(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        for name, value in self.extra_headers.items():
            self.send_header(name, value)
        self.send_header("Vary", "Accept-Encoding")
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, data: Any, status: int = 200) -> None:
        self.send_raw(status, json.dumps(data).encode(), "application/json")

    def send_text(self, status: int, text: str) -> None:
        self.send_raw(status, text.encode(), "text/plain; charset=utf-8")

    def json_body(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise ApiError(400, f"Request decode failed: {err}") from err

    def flag(self, name: str) -> bool:
        values = self.query.get(name)
        return values is not None and values[-1].lower() not in ("false", "0")

    def param(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[-1]

    # --- ACL

    def token(self) -> str:
        token = self.headers.get("X-Consul-Token") or self.param("token")
        auth = self.headers.get("Authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        return token

    def acl(self, permission: str, resource: str, filtered: bool = False) -> bool:
        """True if allowed; for list reads an anonymous caller gets filtered results."""
        required = self.agent.config.acl_token
        if required is None:
            return True
        token = self.token()
        if token == required:
            return True
        if token:
            raise ApiError(403, "ACL not found")
        if filtered:
            self.extra_headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
            return False
        raise ApiError(
            403,
            f"Permission denied: anonymous token lacks permission '{permission}' on \"{resource}\"",
        )

    # --- consistent reads

    def require_leader(self) -> None:
        if not self.agent.has_leader():
            raise ApiError(500, "No cluster leader")

    def blocking_read(self) -> None:
        """Honour ?index=&wait= and set X-Consul-* headers for a catalog/health/KV read."""
        self.require_leader()
        index = self.param("index")
        if index:
            try:
                min_index = int(index)
            except ValueError as err:
                raise ApiError(400, f"Invalid index: {index!r}") from err
            wait = parse_duration(self.param("wait")) if self.param("wait") else DEFAULT_WAIT_S
            self.agent.wait_for_change(min_index, wait * (1 + random.random() / 16))
        with self.agent.cond:
            self.extra_headers.update(
                {
                    "X-Consul-Index": str(self.agent.index),
                    "X-Consul-Knownleader": "true",
                    "X-Consul-Lastcontact": "0",
                    "X-Consul-Effective-Consistency": "leader",
                }
            )

    # --- status

    def status_leader(self) -> None:
        if not self.agent.has_leader():
            # Real Consul answers 200 "" without a leader; the never-healthy fault mode
            # answers 503 so that health probes on this endpoint fail, as the lab expects.
            raise ApiError(503, "No cluster leader")
        self.send_json("127.0.0.1:8300")

    def status_peers(self) -> None:
        self.send_json(["127.0.0.1:8300"] if self.agent.has_leader() else [])

    # --- agent

    def agent_self(self) -> None:
        self.acl("agent:read", self.agent.config.node)
        cfg = self.agent.config
        self.send_json(
            {
                "Config": {
                    "Datacenter": cfg.datacenter,
                    "NodeName": cfg.node,
                    "NodeID": self.agent.node_id,
                    "Server": True,
                    "Version": VERSION,
                },
                "Member": {"Name": cfg.node, "Addr": cfg.node_address, "Port": 8301, "Status": 1},
            }
        )

    def agent_services(self) -> None:
        allowed = self.acl("service:read", "", filtered=True)
        with self.agent.cond:
            services = list(self.agent.services.values()) if allowed else []
            self.send_json({s.sid: s.agent_json(self.agent.config.datacenter) for s in services})

    def agent_service(self, service_id: str) -> None:
        with self.agent.cond:
            svc = self.agent.services.get(service_id)
            if svc is not None:
                self.acl("service:read", svc.name)
                out = svc.agent_json(self.agent.config.datacenter)
        if svc is None:
            raise ApiError(404, f"unknown service ID: {service_id}")
        out["ContentHash"] = format(
            hash(json.dumps(out, sort_keys=True)) & 0xFFFFFFFFFFFFFFFF, "016x"
        )
        self.extra_headers["X-Consul-ContentHash"] = out["ContentHash"]
        self.send_json(out)

    def agent_checks(self) -> None:
        allowed = self.acl("service:read", "", filtered=True)
        node = self.agent.config.node
        with self.agent.cond:
            checks = list(self.agent.checks.values()) if allowed else []
            self.send_json({c.check_id: c.to_json(node) for c in checks})

    def service_register(self) -> None:
        body = self.json_body()
        name = str(canonical(body, SERVICE_KEYS).get("Name", "")) if isinstance(body, dict) else ""
        self.acl("service:write", name)
        self.agent.add_service(body, replace_checks=self.flag("replace-existing-checks"))
        self.send_raw(200, b"", "")

    def service_deregister(self, service_id: str) -> None:
        self.acl("service:write", service_id)
        self.agent.remove_service(service_id)
        self.send_raw(200, b"", "")

    def check_ttl(self, verb: str, check_id: str) -> None:
        self.acl("service:write", check_id)
        status = {"pass": PASSING, "warn": WARNING, "fail": CRITICAL}.get(verb)
        output = self.param("note")
        if verb == "update":
            body = canonical(self.json_body(), {"status": "Status", "output": "Output"})
            status, output = body.get("Status") or "", body.get("Output") or ""
            if status not in (PASSING, WARNING, CRITICAL):
                raise ApiError(400, f'Invalid check status: "{status}"')
        assert status is not None
        self.agent.set_check_status(check_id, status, output)
        self.send_raw(200, b"", "")

    # --- health and catalog

    def health_service(self, name: str) -> None:
        allowed = self.acl("service:read", name, filtered=True)
        self.blocking_read()
        passing_only, tags = self.flag("passing"), self.query.get("tag", [])
        with self.agent.cond:
            entries = (
                [self._health_entry(s) for s in self._instances(name, tags)] if allowed else []
            )
        if passing_only:
            entries = [e for e in entries if all(c["Status"] == PASSING for c in e["Checks"])]
        self.send_json(entries)

    def health_state(self, state: str) -> None:
        """GET /v1/health/state/<state>: every check in that state, `any` for all of them."""
        if not state:
            raise ApiError(400, "Missing check state")
        allowed = self.acl("service:read", "", filtered=True)
        self.blocking_read()
        node = self.agent.config.node
        with self.agent.cond:
            checks = [self._serf_check()] if allowed else []
            checks += [c.to_json(node) for c in self.agent.checks.values()] if allowed else []
        self.send_json([c for c in checks if state == ANY_STATE or c["Status"] == state])

    def _instances(self, name: str, tags: list[str]) -> list[Service]:
        return [
            s
            for s in self.agent.services.values()
            if s.name == name and all(t in s.tags for t in tags)
        ]

    def _node_json(self) -> dict[str, Any]:
        cfg = self.agent.config
        return {
            "ID": self.agent.node_id,
            "Node": cfg.node,
            "Address": cfg.node_address,
            "Datacenter": cfg.datacenter,
            "TaggedAddresses": {
                "lan": cfg.node_address,
                "lan_ipv4": cfg.node_address,
                "wan": cfg.node_address,
                "wan_ipv4": cfg.node_address,
            },
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": 1,
            "ModifyIndex": self.agent.serf_index,
        }

    def _serf_check(self) -> dict[str, Any]:
        return {
            "Node": self.agent.config.node,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": PASSING,
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "Interval": "",
            "Timeout": "",
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }

    def _health_entry(self, svc: Service) -> dict[str, Any]:
        node = self.agent.config.node
        checks = [c.to_json(node) for c in self.agent.checks.values() if c.service_id == svc.sid]
        return {
            "Node": self._node_json(),
            "Service": svc.health_json(),
            "Checks": [self._serf_check(), *checks],
        }

    def catalog_services(self) -> None:
        allowed = self.acl("service:read", "", filtered=True)
        self.blocking_read()
        out: dict[str, list[str]] = {"consul": []} if allowed else {}
        with self.agent.cond:
            for svc in self.agent.services.values() if allowed else []:
                tags = out.setdefault(svc.name, [])
                tags.extend(t for t in svc.tags if t not in tags)
        self.send_json(out)

    def catalog_service(self, name: str) -> None:
        allowed = self.acl("service:read", name, filtered=True)
        self.blocking_read()
        with self.agent.cond:
            found = self._instances(name, self.query.get("tag", [])) if allowed else []
            self.send_json([self._catalog_entry(s) for s in found])

    def _catalog_entry(self, svc: Service) -> dict[str, Any]:
        node = self._node_json()
        h = svc.health_json()
        return {
            "ID": node["ID"],
            "Node": node["Node"],
            "Address": node["Address"],
            "Datacenter": node["Datacenter"],
            "TaggedAddresses": node["TaggedAddresses"],
            "NodeMeta": node["Meta"],
            "ServiceKind": h.get("Kind", ""),
            "ServiceID": h["ID"],
            "ServiceName": h["Service"],
            "ServiceTags": h["Tags"],
            "ServiceAddress": h["Address"],
            "ServiceWeights": h["Weights"],
            "ServiceMeta": h["Meta"],
            "ServicePort": h["Port"],
            "ServiceEnableTagOverride": h["EnableTagOverride"],
            "ServiceProxy": {},
            "ServiceConnect": {},
            "CreateIndex": h["CreateIndex"],
            "ModifyIndex": h["ModifyIndex"],
        }

    # --- KV

    def kv_get(self, key: str) -> None:
        self.acl("key:read", key)
        self.blocking_read()
        found: list[Any]
        with self.agent.cond:
            kv = self.agent.kv
            if self.flag("keys"):
                found = self._kv_keys(key, self.param("separator"))
            elif self.flag("recurse"):
                found = [kv[k].to_json(k) for k in sorted(kv) if k.startswith(key)]
            else:
                found = [kv[key].to_json(key)] if key in kv else []
        if not found:
            self.send_raw(404, b"", "")
        elif self.flag("raw") and not self.flag("keys") and not self.flag("recurse"):
            value = self.agent.kv[key].value or b""
            self.send_raw(200, value, "text/plain; charset=utf-8")
        else:
            self.send_json(found)

    def _kv_keys(self, prefix: str, separator: str) -> list[str]:
        keys: list[str] = []
        for k in sorted(self.agent.kv):
            if not k.startswith(prefix):
                continue
            if separator:
                cut = k.find(separator, len(prefix))
                k = k[: cut + len(separator)] if cut >= 0 else k
            if k not in keys:
                keys.append(k)
        return keys

    def kv_put(self, key: str) -> None:
        self.acl("key:write", key)
        self.require_leader()
        cas = self._int_param("cas")
        flags = self._int_param("flags") or 0
        with self.agent.cond:
            current = self.agent.kv.get(key)
            if cas is not None and not _cas_matches(current, cas):
                self.send_json(False)
                return
            index = self.agent.bump()
            created = current.create_index if current else index
            self.agent.kv[key] = KVEntry(self.body, flags, created, index)
            self.agent.save()
        self.send_json(True)

    def kv_delete(self, key: str) -> None:
        self.acl("key:write", key)
        self.require_leader()
        cas = self._int_param("cas")
        with self.agent.cond:
            kv = self.agent.kv
            if cas is not None:
                current = kv.get(key)
                if current is None or current.modify_index != cas:
                    self.send_json(False)
                    return
            doomed = [k for k in kv if k.startswith(key)] if self.flag("recurse") else [key]
            for k in doomed:
                kv.pop(k, None)
            self.agent.bump()
            self.agent.save()
        self.send_json(True)

    def _int_param(self, name: str) -> int | None:
        raw = self.param(name, "")
        if raw == "":
            return None
        try:
            return int(raw)
        except ValueError as err:
            raise ApiError(400, f"Invalid {name} index: {raw!r}") from err


def _cas_matches(current: KVEntry | None, cas: int) -> bool:
    """cas=0 creates only if absent; otherwise the ModifyIndex must match."""
    if cas == 0:
        return current is None
    return current is not None and current.modify_index == cas


def _route(verb: str, pattern: str, func: Callable[..., None]) -> Route:
    return (verb, re.compile(pattern), func)


ROUTES: list[Route] = [
    _route("GET", r"/v1/status/leader", Handler.status_leader),
    _route("GET", r"/v1/status/peers", Handler.status_peers),
    _route("GET", r"/v1/agent/self", Handler.agent_self),
    _route("GET", r"/v1/agent/services", Handler.agent_services),
    _route("GET", r"/v1/agent/service/(?!register$)(.+)", Handler.agent_service),
    _route("GET", r"/v1/agent/checks", Handler.agent_checks),
    _route("PUT", r"/v1/agent/service/register", Handler.service_register),
    _route("PUT", r"/v1/agent/service/deregister/(.+)", Handler.service_deregister),
    _route("PUT", r"/v1/agent/check/(pass|warn|fail|update)/(.+)", Handler.check_ttl),
    _route("GET", r"/v1/health/service/(.+)", Handler.health_service),
    _route("GET", r"/v1/health/state/(.*)", Handler.health_state),
    _route("GET", r"/v1/catalog/services", Handler.catalog_services),
    _route("GET", r"/v1/catalog/service/(.+)", Handler.catalog_service),
    _route("GET", r"/v1/kv/(.*)", Handler.kv_get),
    _route("PUT", r"/v1/kv/(.*)", Handler.kv_put),
    _route("DELETE", r"/v1/kv/(.*)", Handler.kv_delete),
]


class StandinServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the agent; `shutdown()` also stops check probes.

    The socket is bound at once (so the port is known) but only listens after
    `start(delay)`: until then connections are refused, like a process still starting.
    """

    daemon_threads = True
    request_queue_size = 128   # the stdlib's 5 drops SYNs when a client opens several connections at once (each drop: a 1 s retransmit); a real server listens with the system's backlog
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], agent: Agent, verbose: bool = False) -> None:
        super().__init__(address, Handler, bind_and_activate=False)
        try:
            self.server_bind()
        except OSError:
            self.server_close()
            raise
        self.agent = agent
        self.verbose = verbose
        self._stopping = threading.Event()
        self._serving = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]!s}:{self.port}"

    def start(self, delay: float = 0.0) -> StandinServer:
        """Listen (now, or after `delay` seconds) and serve in a background thread."""
        if delay <= 0:
            self._activate()
        threading.Thread(
            target=self._run, args=(delay,), daemon=True, name="consul-standin"
        ).start()
        return self

    def _activate(self) -> None:
        self.server_activate()
        self._serving.set()

    def _run(self, delay: float) -> None:
        if delay > 0:
            if self._stopping.wait(delay):
                return
            try:
                self._activate()
            except OSError:  # shut down while starting
                return
        self.serve_forever(poll_interval=0.1)

    def wait_stopped(self) -> None:
        """Block until `shutdown()` (signals still get through: the wait wakes up)."""
        while not self._stopping.wait(0.5):
            pass

    def shutdown(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.agent.stop_probes()
        if self._serving.is_set():
            super().shutdown()
        self.server_close()


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    acl_token: str | None = None,
    data_file: str | None = None,
    node: str | None = None,
    mode: str | None = None,
    verbose: bool = False,
) -> StandinServer:
    """Start the stand-in in a background thread; `.shutdown()` stops it."""
    config = Config(
        acl_token=acl_token,
        data_file=data_file,
        mode=mode or os.environ.get("SWARM_STANDIN_MODE", "healthy"),
    )
    if node:
        config.node = node
    server = StandinServer((host, port), Agent(config), verbose=verbose)
    server.start(slow_start_delay(config.mode))
    _arm_die_after(server, config.mode, in_process=True)
    return server


def slow_start_delay(mode: str) -> float:
    """Seconds to keep the port closed for `slow-start:N` (0 otherwise or if malformed)."""
    kind, _, seconds = mode.partition(":")
    try:
        return max(0.0, float(seconds)) if kind == "slow-start" else 0.0
    except ValueError:
        return 0.0


def _arm_die_after(server: StandinServer, mode: str, in_process: bool) -> None:
    if not mode.startswith("die-after:"):
        return
    delay = float(mode.split(":", 1)[1])

    def die() -> None:
        if in_process:
            server.shutdown()
        else:
            print(f"consul-standin: die-after:{delay:g} reached, exiting", flush=True)
            os._exit(1)

    timer = threading.Timer(delay, die)
    timer.daemon = True
    timer.start()


# --------------------------------------------------------------------------- command line

BOOL_FLAGS = {
    "dev",
    "ui",
    "server",
    "bootstrap",
    "disable-host-node-id",
    "rejoin",
    "syslog",
    "disable-keyring-file",
    "verbose",
    "sealed",
}


def parse_go_flags(argv: list[str]) -> tuple[list[str], dict[str, str], list[tuple[str, str]]]:
    """Parse Go-style flags (-x, --x, -x=v, -x v); unknown flags are kept, not fatal.

    Returns positionals, the last value of each flag, and every (flag, value) in order.
    """
    positional: list[str] = []
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            positional.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if not eq and name not in BOOL_FLAGS and i < len(argv) and not argv[i].startswith("-"):
            value = argv[i]
            i += 1
        pairs.append((name, value if (eq or value) else "true"))
    return positional, dict(pairs), pairs


def config_files_text(pairs: list[tuple[str, str]]) -> str:
    """CONSUL_LOCAL_CONFIG plus every -config-file and .hcl/.json file of every -config-dir."""
    texts = [os.environ.get("CONSUL_LOCAL_CONFIG", "")]
    files: list[str] = []
    for name, value in pairs:
        if name == "config-file":
            files.append(value)
        elif name == "config-dir" and os.path.isdir(value):
            files += [
                os.path.join(value, n)
                for n in sorted(os.listdir(value))
                if n.endswith((".hcl", ".json"))
            ]
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                texts.append(fh.read())
        except OSError as err:
            print(f"consul-standin: cannot read config {path}: {err}", flush=True)
    return "\n".join(texts)


def config_value(text: str, key: str, block: str | None = None) -> str | None:
    """The last `key = value` (HCL) or `"key": value` (JSON), optionally inside `block { }`."""
    if block is not None:
        inner = re.findall(rf'(?:^|[\s{{,])"?{block}"?\s*[:=]?\s*\{{([^}}]*)\}}', text)
        text = "\n".join(inner)
    pattern = rf'(?:^|[\s{{,])"?{key}"?\s*[:=]\s*(?:"([^"]*)"|([\w.]+))'
    found = re.findall(pattern, text, flags=re.M)
    if not found:
        return None
    quoted, bare = found[-1]
    return str(quoted or bare)


def config_from_args(argv: list[str]) -> tuple[str, int, Config, bool]:
    """Settings from flags (which win) and config files, as `consul agent` reads them."""
    _, flags, pairs = parse_go_flags(argv)
    text = config_files_text(pairs)

    def pick(flag: str, key: str, default: str = "") -> str:
        return flags.get(flag) or config_value(text, key) or default

    host = flags.get("host") or pick("client", "client_addr", "0.0.0.0")
    port = int(
        flags.get("port")
        or flags.get("http-port")
        or config_value(text, "http", block="ports")
        or 8500
    )
    token = (
        flags.get("acl-token")
        or os.environ.get("SWARM_CONSUL_ACL_TOKEN")
        or config_value(text, "initial_management")
        or config_value(text, "master")
    )
    if config_value(text, "enabled", block="acl") == "false" and not flags.get("acl-token"):
        token = None
    config = Config(
        datacenter=pick("datacenter", "datacenter", "dc1"),
        acl_token=token or None,
        data_file=flags.get("data") or None,
        mode=os.environ.get("SWARM_STANDIN_MODE", "healthy"),
    )
    config.node = pick("node", "node_name", config.node)
    config.node_address = (
        flags.get("advertise")
        or flags.get("bind")
        or config_value(text, "advertise_addr")
        or config_value(text, "bind_addr")
        or config.node_address
    )
    data_dir = pick("data-dir", "data_dir")
    if not config.data_file and data_dir and "dev" not in flags:
        config.data_file = os.path.join(data_dir, "swarm-consul-standin.json")
    return host, port, config, "verbose" in flags


def _exit_on_sigterm() -> None:
    """As PID 1 in a container, SIGTERM is ignored unless handled: `docker stop` must work."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `consul agent -dev -client 0.0.0.0 [--port N] [--acl-token T] [--data F]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["version"] or "-version" in args or "--version" in args:
        print(f"Consul v{VERSION} (swarm stand-in)")
        return 0
    host, port, config, verbose = config_from_args(args)
    _exit_on_sigterm()
    mode = config.mode
    server = StandinServer((host, port), Agent(config), verbose=verbose)
    delay = slow_start_delay(mode)
    if delay:
        print(f"consul-standin: slow start, port closed for {delay:g}s", flush=True)
    server.start(delay)
    _arm_die_after(server, mode, in_process=False)
    acl = "on" if config.acl_token else "off"
    print(
        f"consul-standin: Consul agent running! node={config.node} dc={config.datacenter} "
        f"http={host}:{server.port} acl={acl} mode={mode}",
        flush=True,
    )
    try:
        server.wait_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
