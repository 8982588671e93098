#!/usr/bin/env python3
"""Vault HTTP API stand-in for the swarm lab and tests (stdlib only, one file).

No Vault binary can be installed on the lab machines, so this server speaks the part
of Vault's HTTP API that swarm uses, the way Vault 1.15 answers it
(https://developer.hashicorp.com/vault/api-docs):

- sys: health (200 active / 429 standby / 501 not initialised / 503 sealed, with the
  *code query parameters), seal-status, init, unseal, seal, leader, mounts, auth, policies
- token auth (X-Vault-Token or Authorization: Bearer): lookup-self, create, revoke-self;
  a missing or unknown token or a path the token's policies do not grant is 403
  `{"errors":["permission denied"]}`
- AppRole: role create/read/list/delete, role-id, secret-id, login -> auth.client_token
- KV v2 (dev mode mounts it at `secret/`): data read/write (options.cas, ?version=),
  soft delete, delete/undelete/destroy versions, metadata read/list/write/delete, config
- a sealed (or uninitialised) Vault answers 503 `{"errors":["Vault is sealed"]}` on
  everything except the unauthenticated sys endpoints

Errors are `{"errors":[...]}` with `Content-Type: application/json`. ACL policies
are HCL (`path "x/*" { capabilities = [...] }`) or JSON; globs `*` (suffix) and `+`
(one segment) are supported; a KV v2 write needs `create` for a new secret and `update`
for an existing one (other writes accept either).

Not modelled: token TTL expiry and leases, HA forwarding (a standby only changes
sys/health), other secrets engines and auth methods, response wrapping, namespaces.

It runs in-process for tests via `serve(host, port)` and as the `hashicorp/vault`
image's entrypoint via `main()`, accepting `server -dev ...` and `server -config ...`.
Faults are staged with env SWARM_STANDIN_MODE, as for every lab stand-in:
healthy (default); never-healthy (listens, but the core stays sealed: sys/health 503,
everything else 503 "Vault is sealed"); die-after:SECONDS (exit 1; in-process: stop
serving); slow-start:SECONDS (the port stays closed that long).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

VERSION = "1.15.6"
CLUSTER_NAME = "vault-cluster-swarm"
DEFAULT_KV_MAX_VERSIONS = 10
APPROLE_TOKEN_TTL = 2764800
UNAUTHENTICATED_SYS = {"sys/health", "sys/seal-status", "sys/init", "sys/unseal", "sys/leader"}
DEFAULT_POLICY_PATHS = {
    "auth/token/lookup-self": {"read"},
    "auth/token/renew-self": {"update"},
    "auth/token/revoke-self": {"update"},
    "sys/capabilities-self": {"update"},
}


class ApiError(Exception):
    """An error answer: `{"errors": [...]}` with the given status."""

    def __init__(self, status: int, *errors: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(", ".join(errors))
        self.status = status
        self.errors = list(errors)
        self.body = body


def permission_denied() -> ApiError:
    return ApiError(403, "permission denied")


def now_rfc3339() -> str:
    stamp = dt.datetime.now(dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond:06d}000Z"


def new_token() -> str:
    return "hvs." + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


# --------------------------------------------------------------------------- policies


@dataclass
class Rule:
    pattern: str
    capabilities: set[str]

    def matches(self, path: str) -> bool:
        regex = ""
        for part in re.split(r"(\+|\*$)", self.pattern):
            regex += {"+": "[^/]+", "*": ".*"}.get(part, re.escape(part))
        return re.fullmatch(regex, path) is not None

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Exact paths beat globs; longer literal prefixes beat shorter ones."""
        glob = self.pattern.endswith("*")
        return (0 if glob else 1, len(self.pattern.rstrip("*")), -self.pattern.count("+"))


def parse_policy(text: str) -> list[Rule]:
    """Rules from an HCL or JSON policy document (only `path` blocks are used)."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        return [
            Rule(p, set(body.get("capabilities", [])))
            for p, body in (doc.get("path") or {}).items()
            if isinstance(body, dict)
        ]
    rules = []
    for pattern, body in re.findall(r'path\s+"([^"]+)"\s*\{(.*?)\}', text, flags=re.S):
        caps = re.search(r"capabilities\s*=\s*\[(.*?)\]", body, flags=re.S)
        names = re.findall(r'"([^"]+)"', caps.group(1)) if caps else []
        rules.append(Rule(pattern, set(names)))
    if not rules and text.strip():
        raise ApiError(400, "failed to parse policy: no path blocks found")
    return rules


def capabilities_for(rules: list[Rule], path: str) -> set[str]:
    matching = [r for r in rules if r.matches(path)]
    if not matching:
        return set()
    caps = max(matching, key=lambda r: r.specificity).capabilities
    return set() if "deny" in caps else caps


# --------------------------------------------------------------------------- state


@dataclass
class TokenEntry:
    token: str
    policies: list[str]
    accessor: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    display_name: str = "token"
    path: str = "auth/token/create"
    meta: dict[str, str] | None = None
    ttl: int = 0
    creation_time: int = field(default_factory=lambda: int(time.time()))

    def lookup(self) -> dict[str, Any]:
        return {
            "accessor": self.accessor,
            "creation_time": self.creation_time,
            "creation_ttl": self.ttl,
            "display_name": self.display_name,
            "entity_id": "",
            "expire_time": None,
            "explicit_max_ttl": 0,
            "id": self.token,
            "meta": self.meta,
            "num_uses": 0,
            "orphan": True,
            "path": self.path,
            "policies": list(self.policies),
            "ttl": self.ttl,
            "type": "service",
        }

    def auth(self) -> dict[str, Any]:
        return {
            "client_token": self.token,
            "accessor": self.accessor,
            "policies": sorted(self.policies),
            "token_policies": sorted(self.policies),
            "metadata": self.meta,
            "lease_duration": self.ttl,
            "renewable": self.ttl > 0,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
            "mfa_requirement": None,
            "num_uses": 0,
        }


@dataclass
class Mount:
    path: str  # "secret/" style, with trailing slash
    type: str  # kv | approle | token | system | cubbyhole | identity
    options: dict[str, str] = field(default_factory=dict)
    description: str = ""
    accessor: str = field(default_factory=lambda: f"x_{secrets.token_hex(4)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "accessor": self.accessor,
            "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False},
            "description": self.description,
            "external_entropy_access": False,
            "local": False,
            "options": self.options or None,
            "plugin_version": "",
            "running_plugin_version": f"v{VERSION}+builtin.vault",
            "seal_wrap": False,
            "type": self.type,
            "uuid": str(uuid.uuid4()),
        }


class VaultState:
    """All of the server's state, guarded by one lock; JSON-persistable."""

    def __init__(self, data_file: str | None = None, mode: str = "healthy") -> None:
        self.lock = threading.RLock()
        self.data_file = data_file
        self.mode = mode
        self.initialized = False
        self.sealed = True
        self.threshold = 0
        self.shares = 0
        self.unseal_keys: list[str] = []
        self.progress: list[str] = []
        self.nonce = ""
        self.root_token = ""
        self.tokens: dict[str, TokenEntry] = {}
        self.policies: dict[str, str] = {}
        self.mounts: dict[str, Mount] = {}
        self.auth_mounts: dict[str, Mount] = {}
        self.kv: dict[str, dict[str, dict[str, Any]]] = {}  # mount -> path -> metadata+versions
        self.kv_config: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, dict[str, dict[str, Any]]] = {}  # approle mount -> name -> role
        self.secret_ids: dict[str, dict[str, str]] = {}  # secret_id -> {mount, role, accessor}
        self.cluster_id = str(uuid.uuid4())
        self.save_failed = False
        self.standby = False  # health answers 429 (standbycode) like an HA standby node

    # --- lifecycle

    def initialize(
        self, shares: int, threshold: int, root_token: str | None = None
    ) -> dict[str, Any]:
        if self.initialized:
            raise ApiError(400, "Vault is already initialized")
        if shares < 1 or threshold < 1 or threshold > shares:
            raise ApiError(400, f"invalid seal configuration: threshold {threshold} of {shares}")
        self.initialized, self.sealed = True, True
        self.shares, self.threshold = shares, threshold
        self.unseal_keys = [secrets.token_hex(33) for _ in range(shares)]
        self.root_token = root_token or new_token()
        self.tokens[self.root_token] = TokenEntry(
            self.root_token, ["root"], display_name="root", path="auth/token/root"
        )
        self.policies = {"default": "", "root": ""}
        self.mounts = {
            "cubbyhole/": Mount(
                "cubbyhole/", "cubbyhole", description="per-token private secret storage"
            ),
            "identity/": Mount("identity/", "identity", description="identity store"),
            "sys/": Mount(
                "sys/",
                "system",
                description="system endpoints used for control, policy and debugging",
            ),
        }
        self.auth_mounts = {
            "token/": Mount("token/", "token", description="token based credentials")
        }
        self.save()
        return {
            "keys": list(self.unseal_keys),
            "keys_base64": [base64.b64encode(bytes.fromhex(k)).decode() for k in self.unseal_keys],
            "root_token": self.root_token,
        }

    def init_dev(self, root_token: str) -> None:
        """Like `vault server -dev`: one unseal key, unsealed, KV v2 at secret/."""
        self.initialize(1, 1, root_token)
        self.mount_secrets("secret/", "kv", {"version": "2"}, "key/value secret storage")
        self.sealed = False
        self.save()

    def mount_secrets(self, path: str, kind: str, options: dict[str, str], desc: str = "") -> None:
        path = path.strip("/") + "/"
        if path in self.mounts:
            raise ApiError(400, f"path is already in use at {path}")
        if kind == "kv-v2":
            kind, options = "kv", {**options, "version": "2"}
        if kind != "kv" or str(options.get("version", "1")) != "2":
            raise ApiError(
                400, f'plugin not supported by this stand-in: "{kind}" (only kv version 2)'
            )
        self.mounts[path] = Mount(path, "kv", {"version": "2"}, desc)
        self.kv.setdefault(path, {})
        self.kv_config.setdefault(
            path, {"max_versions": 0, "cas_required": False, "delete_version_after": "0s"}
        )

    def is_ready(self) -> bool:
        """False in never-healthy mode: the core stays sealed whatever keys are given."""
        return self.mode != "never-healthy"

    def is_sealed(self) -> bool:
        return self.sealed or not self.is_ready()

    def unseal(self, key: str | None, reset: bool) -> None:
        if not self.initialized:
            raise ApiError(400, "Vault is not initialized")
        if reset:
            self.progress, self.nonce = [], ""
            return
        if not key:
            raise ApiError(
                400, "'key' must be specified in request body as JSON, or 'reset' set to true"
            )
        if not self.sealed:
            return
        hex_key = _normalise_key(key)
        if hex_key not in self.unseal_keys:
            raise ApiError(400, "Unseal failed, invalid key")
        self.nonce = self.nonce or str(uuid.uuid4())
        if hex_key not in self.progress:
            self.progress.append(hex_key)
        if len(self.progress) >= self.threshold:
            self.sealed, self.progress, self.nonce = False, [], ""

    def seal(self) -> None:
        self.sealed, self.progress, self.nonce = True, [], ""

    def seal_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "type": "shamir",
            "initialized": self.initialized,
            "sealed": self.is_sealed(),
            "t": self.threshold,
            "n": self.shares,
            "progress": len(self.progress),
            "nonce": self.nonce,
            "version": VERSION,
            "build_date": "2024-01-01T00:00:00Z",
            "migration": False,
            "recovery_seal": False,
            "storage_type": "file" if self.data_file else "inmem",
        }
        if self.initialized and not self.is_sealed():
            status.update({"cluster_name": CLUSTER_NAME, "cluster_id": self.cluster_id})
        return status

    # --- persistence

    def save(self) -> None:
        if not self.data_file:
            return
        data = {
            "initialized": self.initialized,
            "threshold": self.threshold,
            "shares": self.shares,
            "unseal_keys": self.unseal_keys,
            "root_token": self.root_token,
            "tokens": {t: vars(e) for t, e in self.tokens.items()},
            "policies": self.policies,
            "mounts": {p: vars(m) for p, m in self.mounts.items()},
            "auth_mounts": {p: vars(m) for p, m in self.auth_mounts.items()},
            "kv": self.kv,
            "kv_config": self.kv_config,
            "roles": self.roles,
            "secret_ids": self.secret_ids,
            "cluster_id": self.cluster_id,
        }
        tmp = f"{self.data_file}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.data_file)
        except OSError as err:
            # A read-only storage dir must not take the API down: keep serving from memory.
            if not self.save_failed:
                print(f"vault-standin: cannot persist to {self.data_file}: {err}", flush=True)
            self.save_failed = True

    def load(self) -> bool:
        if not self.data_file or not os.path.exists(self.data_file):
            return False
        with open(self.data_file, encoding="utf-8") as fh:
            data = json.load(fh)
        for name in (
            "initialized",
            "threshold",
            "shares",
            "unseal_keys",
            "root_token",
            "policies",
            "kv",
            "kv_config",
            "roles",
            "secret_ids",
            "cluster_id",
        ):
            setattr(self, name, data[name])
        self.tokens = {t: TokenEntry(**e) for t, e in data["tokens"].items()}
        self.mounts = {p: Mount(**m) for p, m in data["mounts"].items()}
        self.auth_mounts = {p: Mount(**m) for p, m in data["auth_mounts"].items()}
        return True


def _normalise_key(key: str) -> str:
    try:
        bytes.fromhex(key)
        return key.lower()
    except ValueError:
        pass
    try:
        return base64.b64decode(key, validate=True).hex()
    except ValueError:
        return ""


# --------------------------------------------------------------------------- KV v2


class KVv2:
    """The KV version 2 secrets engine of one mount (callers hold the state lock)."""

    def __init__(self, state: VaultState, mount: str) -> None:
        self.state = state
        self.mount = mount
        self.secrets = state.kv[mount]
        self.config = state.kv_config[mount]

    def _version_meta(self, meta: dict[str, Any], version: int) -> dict[str, Any]:
        v = meta["versions"][str(version)]
        return {
            "created_time": v["created_time"],
            "custom_metadata": meta.get("custom_metadata"),
            "deletion_time": v["deletion_time"],
            "destroyed": v["destroyed"],
            "version": version,
        }

    def read(self, path: str, version: int) -> dict[str, Any]:
        meta = self.secrets.get(path)
        if meta is None:
            raise ApiError(404)
        version = version or meta["current_version"]
        v = meta["versions"].get(str(version))
        if v is None:
            raise ApiError(404)
        body = {
            "data": None if _is_gone(v) else v["data"],
            "metadata": self._version_meta(meta, version),
        }
        if _is_gone(v):
            # Vault answers a deleted or destroyed version with 404 and the full body.
            raise ApiError(404, body=envelope(body))
        return body

    def write(self, path: str, data: Any, options: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ApiError(400, "no data provided")
        meta = self.secrets.get(path)
        current = meta["current_version"] if meta else 0
        cas = options.get("cas")
        cas_required = self.config.get("cas_required") or (meta or {}).get("cas_required")
        if cas is None and cas_required:
            raise ApiError(400, "check-and-set parameter required for this call")
        if cas is not None and int(cas) != current:
            raise ApiError(400, "check-and-set parameter did not match the current version")
        if meta is None:
            meta = self._new_metadata()
            self.secrets[path] = meta
        stamp = now_rfc3339()
        version = current + 1
        meta["versions"][str(version)] = {
            "created_time": stamp,
            "deletion_time": "",
            "destroyed": False,
            "data": data,
        }
        meta["current_version"], meta["updated_time"] = version, stamp
        self._trim(meta)
        return self._version_meta(meta, version)

    def _new_metadata(self) -> dict[str, Any]:
        stamp = now_rfc3339()
        return {
            "cas_required": False,
            "created_time": stamp,
            "current_version": 0,
            "custom_metadata": None,
            "delete_version_after": "0s",
            "max_versions": 0,
            "oldest_version": 0,
            "updated_time": stamp,
            "versions": {},
        }

    def _trim(self, meta: dict[str, Any]) -> None:
        limit = meta["max_versions"] or self.config.get("max_versions") or DEFAULT_KV_MAX_VERSIONS
        versions = sorted(int(v) for v in meta["versions"])
        for old in versions[: max(0, len(versions) - limit)]:
            del meta["versions"][str(old)]
        remaining = sorted(int(v) for v in meta["versions"])
        meta["oldest_version"] = remaining[0] if len(versions) > limit else meta["oldest_version"]

    def set_deleted(self, path: str, versions: list[int], deleted: bool) -> None:
        meta = self.secrets.get(path)
        for version in versions:
            v = (meta or {}).get("versions", {}).get(str(version))
            if v is not None and not v["destroyed"]:
                v["deletion_time"] = now_rfc3339() if deleted else ""

    def delete_latest(self, path: str) -> None:
        meta = self.secrets.get(path)
        if meta is not None:
            self.set_deleted(path, [meta["current_version"]], True)

    def destroy(self, path: str, versions: list[int]) -> None:
        for version in versions:
            v = self.secrets.get(path, {}).get("versions", {}).get(str(version))
            if v is not None:
                v["destroyed"], v["data"] = True, None

    def metadata(self, path: str) -> dict[str, Any]:
        meta = self.secrets.get(path)
        if meta is None:
            raise ApiError(404)
        out = {k: v for k, v in meta.items() if k != "versions"}
        out["versions"] = {
            n: {k: v[k] for k in ("created_time", "deletion_time", "destroyed")}
            for n, v in meta["versions"].items()
        }
        return out

    def update_metadata(self, path: str, body: dict[str, Any]) -> None:
        meta = self.secrets.setdefault(path, self._new_metadata())
        for key in ("max_versions", "cas_required", "custom_metadata", "delete_version_after"):
            if key in body:
                meta[key] = body[key]
        meta["updated_time"] = now_rfc3339()

    def list(self, prefix: str) -> list[str]:
        prefix = prefix.strip("/")
        prefix = f"{prefix}/" if prefix else ""
        keys: set[str] = set()
        for path in self.secrets:
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                keys.add(rest.split("/", 1)[0] + "/" if "/" in rest else rest)
        if not keys:
            raise ApiError(404)
        return sorted(keys)


def _is_gone(version: dict[str, Any]) -> bool:
    return bool(version["deletion_time"]) or bool(version["destroyed"])


# --------------------------------------------------------------------------- HTTP layer


class Request:
    """One parsed API request: method, path below /v1/, query, JSON body, token."""

    def __init__(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, token: str
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.token = token

    def param(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[-1]

    @property
    def is_list(self) -> bool:
        return self.method == "LIST" or (self.method == "GET" and self.param("list") == "true")

    @property
    def capability(self) -> str:
        if self.is_list:
            return "list"
        return {"GET": "read", "HEAD": "read", "DELETE": "delete", "PATCH": "patch"}.get(
            self.method, "write"
        )


Response = tuple[int, Any]  # (status, JSON body or None for 204)


class Handler(BaseHTTPRequestHandler):
    server: StandinServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            sys.stderr.write("vault-standin: " + (format % args) + "\n")

    def send_response(self, code: int, message: str | None = None) -> None:
        """Status line and Date only: Go's net/http sends no Server header."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_LIST(self) -> None:
        self._handle("LIST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        try:
            req = self._parse(method)
            status, body = self.server.api.handle(req)
        except ApiError as err:
            status = err.status
            body = err.body if err.body is not None else {"errors": err.errors}
        self._send(status, body)

    def _parse(self, method: str) -> Request:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if not path.startswith("/v1/"):
            raise ApiError(404)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as err:
            raise ApiError(400, f"failed to parse JSON input: {err}") from err
        token = self.headers.get("X-Vault-Token", "")
        auth = self.headers.get("Authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        query = parse_qs(parts.query, keep_blank_values=True)
        return Request(method, re.sub("/+", "/", path[4:]), query, body, token)

    def _send(self, status: int, body: Any) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def envelope(data: Any = None, *, auth: Any = None) -> dict[str, Any]:
    """Vault 1.15's response envelope (no mount_type yet: that came in 1.16)."""
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
    }


class Api:
    """Routes requests: seal and token checks first, then the backend owning the path."""

    def __init__(self, state: VaultState) -> None:
        self.state = state

    def handle(self, req: Request) -> Response:
        with self.state.lock:
            if req.path in UNAUTHENTICATED_SYS:
                return self.unauthenticated_sys(req)
            if self.state.is_sealed():
                raise ApiError(503, "Vault is sealed")
            if re.fullmatch(r"auth/[^/]+/login", req.path):
                return self.approle_login(req)
            entry = self.authorise(req)
            return self.route(req, entry)

    # --- authorisation

    def authorise(self, req: Request) -> TokenEntry:
        entry = self.state.tokens.get(req.token) if req.token else None
        if entry is None:
            raise permission_denied()
        if "root" in entry.policies:
            return entry
        if req.capability in DEFAULT_POLICY_PATHS.get(req.path, set()) or (
            req.capability == "write" and "update" in DEFAULT_POLICY_PATHS.get(req.path, set())
        ):
            return entry
        rules = [r for p in entry.policies for r in parse_policy(self.state.policies.get(p, ""))]
        caps = capabilities_for(rules, req.path)
        if not caps & self._wanted(req):
            raise permission_denied()
        return entry

    def _wanted(self, req: Request) -> set[str]:
        """The capability a request needs. KV v2 writes have an existence check, as in Vault:
        `create` for a new secret, `update` for an existing one; other writes take either."""
        if req.capability != "write":
            return {req.capability}
        mount, rest = self._split_mount(req.path, self.state.mounts)
        op, _, path = rest.partition("/")
        if mount is None or op not in ("data", "metadata"):
            return {"create", "update"}
        return {"update"} if path in self.state.kv.get(mount, {}) else {"create"}

    # --- routing

    def route(self, req: Request, entry: TokenEntry) -> Response:
        path = req.path
        if path.startswith("sys/"):
            return self.sys(req, entry)
        if path.startswith("auth/token/"):
            return self.token(req, entry)
        mount, rest = self._split_mount(path, self.state.auth_mounts, prefix="auth/")
        if mount is not None:
            return self.approle(req, mount, rest)
        mount, rest = self._split_mount(path, self.state.mounts)
        if mount is not None and self.state.mounts[mount].type == "kv":
            return self.kv(req, mount, rest)
        raise ApiError(404, f'no handler for route "{path}". route entry not found.')

    @staticmethod
    def _split_mount(
        path: str, mounts: dict[str, Mount], prefix: str = ""
    ) -> tuple[str | None, str]:
        if not path.startswith(prefix):
            return None, ""
        inner = path[len(prefix) :]
        for mount in sorted(mounts, key=len, reverse=True):
            if (inner + "/").startswith(mount) and mounts[mount].type in ("kv", "approle"):
                return mount, inner[len(mount) :]
        return None, ""

    # --- sys, unauthenticated

    def unauthenticated_sys(self, req: Request) -> Response:
        state = self.state
        if req.path == "sys/health":
            return self.health(req)
        if req.path == "sys/seal-status":
            return 200, state.seal_status()
        if req.path == "sys/leader":
            if state.is_sealed():
                raise ApiError(503, "Vault is sealed")
            return 200, {
                "ha_enabled": False,
                "is_self": False,
                "leader_address": "",
                "leader_cluster_address": "",
                "performance_standby": False,
            }
        if req.path == "sys/init":
            if req.method == "GET":
                return 200, {"initialized": state.initialized}
            body = req.body
            return 200, state.initialize(
                int(body.get("secret_shares") or 0), int(body.get("secret_threshold") or 0)
            )
        if req.method not in ("PUT", "POST"):
            raise ApiError(405, "unsupported operation")
        if not state.is_ready():
            raise ApiError(503, "Vault is sealed")
        state.unseal(req.body.get("key"), bool(req.body.get("reset")))
        state.save()
        return 200, state.seal_status()

    def health(self, req: Request) -> Response:
        state = self.state
        sealed = state.is_sealed()
        standby = state.standby and state.initialized and not sealed
        if not state.initialized:
            status = int(req.param("uninitcode", "501"))
        elif sealed:
            status = int(req.param("sealedcode", "503"))
        elif standby and req.param("standbyok").lower() not in ("true", "1"):
            status = int(req.param("standbycode", "429"))
        else:
            status = int(req.param("activecode", "200"))
        body = {
            "initialized": state.initialized,
            "sealed": sealed,
            "standby": standby,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": VERSION,
            "enterprise": False,
            "echo_duration_ms": 0,
            "clock_skew_ms": 0,
        }
        if state.initialized and not sealed:
            body.update({"cluster_name": CLUSTER_NAME, "cluster_id": state.cluster_id})
        return status, body

    # --- sys, authenticated

    def sys(self, req: Request, entry: TokenEntry) -> Response:
        path, method = req.path, req.method
        if path == "sys/seal" and method in ("PUT", "POST"):
            self._require_root(entry)
            self.state.seal()
            return 204, None
        if path == "sys/mounts" and method == "GET":
            mounts = {p: m.to_json() for p, m in self.state.mounts.items()}
            return 200, {**mounts, **envelope(mounts)}
        if path.startswith("sys/mounts/"):
            return self.sys_mount(req, path[len("sys/mounts/") :])
        if path == "sys/auth" and method == "GET":
            mounts = {p: m.to_json() for p, m in self.state.auth_mounts.items()}
            return 200, {**mounts, **envelope(mounts)}
        if path.startswith("sys/auth/"):
            return self.sys_auth(req, path[len("sys/auth/") :])
        match = re.fullmatch(r"sys/(?:policy|policies/acl)(?:/(.+))?", path)
        if match:
            return self.sys_policy(req, match.group(1))
        raise ApiError(404, f'no handler for route "{path}". route entry not found.')

    @staticmethod
    def _require_root(entry: TokenEntry) -> None:
        if "root" not in entry.policies:
            raise permission_denied()

    def sys_mount(self, req: Request, path: str) -> Response:
        state = self.state
        if req.method in ("POST", "PUT"):
            body = req.body
            state.mount_secrets(
                path,
                str(body.get("type", "")),
                dict(body.get("options") or {}),
                str(body.get("description") or ""),
            )
        elif req.method == "DELETE":
            key = path.strip("/") + "/"
            state.mounts.pop(key, None)
            state.kv.pop(key, None)
        else:
            raise ApiError(405, "unsupported operation")
        state.save()
        return 204, None

    def sys_auth(self, req: Request, path: str) -> Response:
        key = path.strip("/") + "/"
        if req.method in ("POST", "PUT"):
            kind = str(req.body.get("type", ""))
            if kind != "approle":
                raise ApiError(
                    400, f'plugin not supported by this stand-in: "{kind}" (only approle)'
                )
            if key in self.state.auth_mounts:
                raise ApiError(400, f"path is already in use at {key}")
            self.state.auth_mounts[key] = Mount(
                key, "approle", description=str(req.body.get("description") or "")
            )
            self.state.roles.setdefault(key, {})
        elif req.method == "DELETE":
            self.state.auth_mounts.pop(key, None)
            self.state.roles.pop(key, None)
        else:
            raise ApiError(405, "unsupported operation")
        self.state.save()
        return 204, None

    def sys_policy(self, req: Request, name: str | None) -> Response:
        policies = self.state.policies
        if name is None or req.is_list:
            names = sorted(policies)
            return 200, {
                "keys": names,
                "policies": names,
                **envelope({"keys": names, "policies": names}),
            }
        if req.method == "GET":
            if name not in policies:
                raise ApiError(404)
            data = {"name": name, "rules": policies[name], "policy": policies[name]}
            return 200, {**data, **envelope(data)}
        if req.method == "DELETE":
            if name in ("root", "default"):
                raise ApiError(400, f'cannot delete "{name}" policy')
            policies.pop(name, None)
        else:
            text = str(req.body.get("policy") or req.body.get("rules") or "")
            parse_policy(text)
            policies[name] = text
        self.state.save()
        return 204, None

    # --- token auth

    def token(self, req: Request, entry: TokenEntry) -> Response:
        path = req.path[len("auth/token/") :]
        if path == "lookup-self":
            return 200, envelope(entry.lookup())
        if path == "revoke-self":
            self.state.tokens.pop(entry.token, None)
            self.state.save()
            return 204, None
        if path == "renew-self":
            return 200, envelope(auth=entry.auth())
        if path in ("create", "create-orphan") and req.method in ("POST", "PUT"):
            return 200, envelope(auth=self._create_token(req.body, entry).auth())
        raise ApiError(404, f'no handler for route "{req.path}". route entry not found.')

    def _create_token(self, body: dict[str, Any], parent: TokenEntry) -> TokenEntry:
        policies = [str(p) for p in (body.get("policies") or parent.policies)]
        if "root" not in parent.policies and not set(policies) <= set(parent.policies):
            raise ApiError(400, "child policies must be subset of parent")
        if (
            not body.get("no_default_policy")
            and "root" not in policies
            and "default" not in policies
        ):
            policies.append("default")
        ttl = _ttl_seconds(body.get("ttl"), 0 if "root" in policies else 2764800)
        token = str(body.get("id") or new_token())
        entry = TokenEntry(
            token,
            sorted(policies),
            display_name="token-" + str(body.get("display_name", "")),
            meta=body.get("meta"),
            ttl=ttl,
        )
        self.state.tokens[token] = entry
        self.state.save()
        return entry

    # --- AppRole

    def approle(self, req: Request, mount: str, rest: str) -> Response:
        roles = self.state.roles.setdefault(mount, {})
        if rest in ("role", "role/") and req.is_list:
            if not roles:
                raise ApiError(404)
            return 200, envelope({"keys": sorted(roles)})
        match = re.fullmatch(r"role/([^/]+)(?:/(role-id|secret-id))?", rest)
        if not match:
            raise ApiError(404, f'no handler for route "{req.path}". route entry not found.')
        name, sub = match.groups()
        if sub is None:
            return self._role(req, roles, name)
        role = roles.get(name)
        if role is None:
            raise ApiError(400, f'role "{name}" does not exist')
        if sub == "role-id":
            if req.method in ("POST", "PUT"):
                role["role_id"] = str(req.body.get("role_id") or role["role_id"])
                self.state.save()
                return 204, None
            return 200, envelope({"role_id": role["role_id"]})
        return self._new_secret_id(mount, name)

    def _role(self, req: Request, roles: dict[str, dict[str, Any]], name: str) -> Response:
        if req.method == "GET":
            if name not in roles:
                raise ApiError(404)
            data = {k: v for k, v in roles[name].items() if k != "role_id"}
            return 200, envelope(data)
        if req.method == "DELETE":
            roles.pop(name, None)
        else:
            role = roles.setdefault(
                name,
                {
                    "role_id": str(uuid.uuid4()),
                    "bind_secret_id": True,
                    "token_policies": [],
                    "token_ttl": 0,
                    "secret_id_ttl": 0,
                },
            )
            policies = req.body.get("token_policies", req.body.get("policies"))
            if policies is not None:
                role["token_policies"] = _as_list(policies)
            for key in ("token_ttl", "secret_id_ttl"):
                if key in req.body:
                    role[key] = _ttl_seconds(req.body[key], 0)
        self.state.save()
        return 204, None

    def _new_secret_id(self, mount: str, role: str) -> Response:
        secret_id, accessor = str(uuid.uuid4()), str(uuid.uuid4())
        self.state.secret_ids[secret_id] = {"mount": mount, "role": role, "accessor": accessor}
        self.state.save()
        data = {
            "secret_id": secret_id,
            "secret_id_accessor": accessor,
            "secret_id_ttl": 0,
            "secret_id_num_uses": 0,
        }
        return 200, envelope(data)

    def approle_login(self, req: Request) -> Response:
        mount = req.path[len("auth/") : -len("login")]
        if self.state.auth_mounts.get(mount, Mount("", "")).type != "approle":
            raise permission_denied()
        role_id = str(req.body.get("role_id") or "")
        if not role_id:
            raise ApiError(400, "missing role_id")
        roles = self.state.roles.get(mount, {})
        name = next((n for n, r in roles.items() if r["role_id"] == role_id), None)
        bound = self.state.secret_ids.get(str(req.body.get("secret_id") or ""))
        if name is None or bound is None or bound["role"] != name or bound["mount"] != mount:
            raise ApiError(400, "invalid role or secret ID")
        role = roles[name]
        policies = sorted({"default", *role["token_policies"]})
        entry = TokenEntry(
            new_token(),
            policies,
            display_name="approle",
            path=f"auth/{mount}login",
            meta={"role_name": name},
            ttl=role["token_ttl"] or APPROLE_TOKEN_TTL,
        )
        self.state.tokens[entry.token] = entry
        self.state.save()
        return 200, envelope(auth=entry.auth())

    # --- KV v2

    def kv(self, req: Request, mount: str, rest: str) -> Response:
        engine = KVv2(self.state, mount)
        op, _, path = rest.partition("/")
        handlers: dict[str, Callable[[Request, KVv2, str], Response]] = {
            "data": self.kv_data,
            "metadata": self.kv_metadata,
            "delete": self.kv_versions,
            "undelete": self.kv_versions,
            "destroy": self.kv_versions,
            "config": self.kv_config,
        }
        handler = handlers.get(op)
        if handler is None or (op not in ("config", "metadata") and not path):
            raise ApiError(404, f'no handler for route "{req.path}". route entry not found.')
        status, body = handler(req, engine, path)
        self.state.save()
        return status, body

    def kv_data(self, req: Request, engine: KVv2, path: str) -> Response:
        if req.method == "GET":
            version = int(req.param("version", "0") or 0)
            return 200, envelope(engine.read(path, version))
        if req.method in ("POST", "PUT"):
            options = req.body.get("options") or {}
            meta = engine.write(path, req.body.get("data"), options)
            return 200, envelope(meta)
        if req.method == "DELETE":
            engine.delete_latest(path)
            return 204, None
        raise ApiError(405, "unsupported operation")

    def kv_metadata(self, req: Request, engine: KVv2, path: str) -> Response:
        if req.is_list:
            return 200, envelope({"keys": engine.list(path)})
        if req.method == "GET":
            return 200, envelope(engine.metadata(path))
        if req.method == "DELETE":
            engine.secrets.pop(path, None)
            return 204, None
        engine.update_metadata(path, req.body)
        return 204, None

    def kv_versions(self, req: Request, engine: KVv2, path: str) -> Response:
        op = req.path[len(engine.mount) :].split("/", 1)[0]
        versions = [int(v) for v in req.body.get("versions") or []]
        if not versions:
            raise ApiError(400, "no version number provided")
        if op == "destroy":
            engine.destroy(path, versions)
        else:
            engine.set_deleted(path, versions, op == "delete")
        return 204, None

    def kv_config(self, req: Request, engine: KVv2, path: str) -> Response:
        if req.method == "GET":
            return 200, envelope(dict(engine.config))
        for key in ("max_versions", "cas_required", "delete_version_after"):
            if key in req.body:
                engine.config[key] = req.body[key]
        return 204, None


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return [str(p) for p in value]


def _ttl_seconds(value: Any, default: int) -> int:
    if value in (None, ""):
        return default
    if isinstance(value, (int, float)):
        return int(value)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)([smhd]?)", str(value))
    if not match:
        raise ApiError(400, f"invalid duration: {value}")
    return int(match.group(1)) * units.get(match.group(2) or "s", 1)


# --------------------------------------------------------------------------- server


class StandinServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the Vault state.

    The socket is bound at once (so the port is known) but only listens after
    `start(delay)`: until then connections are refused, like a process still starting.
    """

    daemon_threads = True
    request_queue_size = 128   # the stdlib's 5 drops SYNs when a client opens several connections at once (each drop: a 1 s retransmit); a real server listens with the system's backlog
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: VaultState, verbose: bool = False) -> None:
        super().__init__(address, Handler, bind_and_activate=False)
        try:
            self.server_bind()
        except OSError:
            self.server_close()
            raise
        self.state = state
        self.api = Api(state)
        self.verbose = verbose
        self._stopping = threading.Event()
        self._serving = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]!s}:{self.port}"

    @property
    def root_token(self) -> str:
        return self.state.root_token

    @property
    def unseal_keys(self) -> list[str]:
        return list(self.state.unseal_keys)

    def start(self, delay: float = 0.0) -> StandinServer:
        """Listen (now, or after `delay` seconds) and serve in a background thread."""
        if delay <= 0:
            self._activate()
        threading.Thread(target=self._run, args=(delay,), daemon=True, name="vault-standin").start()
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
        if self._serving.is_set():
            super().shutdown()
        self.server_close()


def build_state(
    *, dev: bool, root_token: str | None, sealed: bool, data_file: str | None, mode: str
) -> VaultState:
    """Load `data_file` if present, else start like `vault server` (-dev or not)."""
    state = VaultState(data_file=data_file, mode=mode)
    with state.lock:
        if state.load():
            state.sealed = sealed or not dev
        elif dev:
            state.init_dev(root_token or new_token())
            state.sealed = sealed
    return state


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    dev: bool = True,
    root_token: str = "root",
    sealed: bool = False,
    standby: bool = False,
    data_file: str | None = None,
    mode: str | None = None,
    verbose: bool = False,
) -> StandinServer:
    """Start the stand-in in a background thread; `.shutdown()` stops it.

    dev=True is `vault server -dev` (initialised, unsealed, KV v2 at secret/);
    dev=False is a fresh `vault server -config ...` that needs `sys/init` + unseal.
    """
    mode = mode or os.environ.get("SWARM_STANDIN_MODE", "healthy")
    state = build_state(
        dev=dev, root_token=root_token, sealed=sealed, data_file=data_file, mode=mode
    )
    state.standby = standby
    server = StandinServer((host, port), state, verbose=verbose).start(slow_start_delay(mode))
    _arm_die_after(server, mode, in_process=True)
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
            print(f"vault-standin: die-after:{delay:g} reached, exiting", flush=True)
            os._exit(1)

    timer = threading.Timer(delay, die)
    timer.daemon = True
    timer.start()


# --------------------------------------------------------------------------- command line

BOOL_FLAGS = {
    "dev",
    "dev-tls",
    "dev-no-store-token",
    "dev-ha",
    "dev-transactional",
    "dev-three-node",
    "dev-kv-v1",
    "exit-on-core-shutdown",
    "recovery",
    "sealed",
    "verbose",
}


def parse_go_flags(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Parse Go-style flags (-x, --x, -x=v, -x v); unknown flags are kept, not fatal."""
    positional: list[str] = []
    flags: dict[str, str] = {}
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
        flags[name] = value if (eq or value) else "true"
    return positional, flags


def read_config_text(path: str) -> str:
    """Text of a -config file or of every .hcl/.json file in a -config directory."""
    texts = [os.environ.get("VAULT_LOCAL_CONFIG", "")]
    files = [path]
    if os.path.isdir(path):
        files = [
            os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith((".hcl", ".json"))
        ]
    for name in files:
        try:
            with open(name, encoding="utf-8") as fh:
                texts.append(fh.read())
        except OSError:
            continue
    return "\n".join(texts)


def config_from_text(text: str) -> tuple[str | None, str | None]:
    """(listener address, storage path) found in HCL or JSON server config."""
    address = re.search(
        r'"?listener"?\s*[:=]?\s*[\[{]?\s*\{?\s*"?tcp"?\s*[:=]?\s*\{[^}]*?(?:^|[\s{,])"?address"?\s*[:=]\s*"([^"]+)"',
        text,
        flags=re.M,
    )
    storage = re.search(
        r'"?storage"?\s*[:=]?\s*\{?\s*"?(?:file|raft)"?\s*[:=]?\s*\{[^}]*?"?path"?\s*[=:]\s*"([^"]+)"',
        text,
    )
    return (address.group(1) if address else None, storage.group(1) if storage else None)


def split_address(address: str, host: str, port: int) -> tuple[str, int]:
    h, _, p = address.rpartition(":")
    return (h or host, int(p) if p.isdigit() else port)


def options_from_args(argv: list[str]) -> dict[str, Any]:
    _, flags = parse_go_flags(argv)
    dev = "dev" in flags or "config" not in flags
    host, port = "0.0.0.0", 8200
    data_file = flags.get("data") or None
    if "config" in flags:
        address, storage = config_from_text(read_config_text(flags["config"]))
        if address:
            host, port = split_address(address, host, port)
        if storage and not data_file:
            data_file = os.path.join(storage, "swarm-vault-standin.json")
    listen = flags.get("dev-listen-address") or (
        os.environ.get("VAULT_DEV_LISTEN_ADDRESS") if dev else None
    )
    if listen:
        host, port = split_address(listen, host, port)
    host = flags.get("host") or host
    port = int(flags.get("port") or port)
    token = (
        flags.get("dev-root-token")
        or flags.get("dev-root-token-id")
        or os.environ.get("VAULT_DEV_ROOT_TOKEN_ID")
        or None
    )
    return {
        "host": host,
        "port": port,
        "dev": dev,
        "root_token": token,
        "sealed": "sealed" in flags,
        "data_file": data_file,
        "verbose": "verbose" in flags,
    }


def _exit_on_sigterm() -> None:
    """As PID 1 in a container, SIGTERM is ignored unless handled: `docker stop` must work."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `vault server -dev [-dev-root-token-id T] [--port N] [--sealed] [--data F]`
    or `vault server -config FILE|DIR` (uninitialised until `sys/init`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["version"] or "-version" in args or "--version" in args:
        print(f"Vault v{VERSION} (swarm stand-in)")
        return 0
    opts = options_from_args(args)
    mode = os.environ.get("SWARM_STANDIN_MODE", "healthy")
    _exit_on_sigterm()
    state = build_state(
        dev=opts["dev"],
        root_token=opts["root_token"],
        sealed=opts["sealed"],
        data_file=opts["data_file"],
        mode=mode,
    )
    server = StandinServer((opts["host"], opts["port"]), state, verbose=opts["verbose"])
    delay = slow_start_delay(mode)
    if delay:
        print(f"vault-standin: slow start, port closed for {delay:g}s", flush=True)
    server.start(delay)
    _arm_die_after(server, mode, in_process=False)
    _announce(opts, state, server.port, mode)
    try:
        server.wait_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def _announce(opts: dict[str, Any], state: VaultState, port: int, mode: str) -> None:
    kind = "dev" if opts["dev"] else "server"
    print(
        f"vault-standin: Vault server started! mode={kind} api=http://{opts['host']}:{port} "
        f"initialized={state.initialized} sealed={state.sealed} faults={mode}",
        flush=True,
    )
    if opts["dev"] and state.initialized:
        # `vault server -dev` prints both, so the lab can read them from the log.
        print(
            f"Unseal Key: {base64.b64encode(bytes.fromhex(state.unseal_keys[0])).decode()}",
            flush=True,
        )
        print(f"Root Token: {state.root_token}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
