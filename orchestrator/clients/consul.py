"""swarm's Consul client: register services with health checks, read their health back.

A `ServiceRegistration` is the small, frozen description of one service instance that
swarm registers on the control node's Consul agent after a phase's gate passes (name,
node address, port, tags, meta such as release id / image digest / node, and one HTTP
or TCP check). `register` is idempotent: it compares with what the agent already has
and reports whether anything changed. `services_with_health` and `wait_status` read
the aggregated health per service instance for `swarm status` and for gates.

ACL token: the one passed in, else `CONSUL_HTTP_TOKEN`. A 403, an unknown token, a
Consul without a leader or an unreachable agent becomes a `ServiceError` that names
the address and says what to do.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Literal, NoReturn, TypeVar
from urllib.parse import urlsplit

import consul
import consul.exceptions
import requests

from orchestrator.clients.consul_read import ConsulAccess, consul_token
from orchestrator.clients.http import Tls
from orchestrator.errors import InputError, ServiceError
from orchestrator.secrets import Secret, scrub

log = logging.getLogger(__name__)

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
_SEVERITY = {PASSING: 0, WARNING: 1, CRITICAL: 2}
DEFAULT_TIMEOUT_S = 10.0
T = TypeVar("T")


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class CheckSpec:
    """One HTTP or TCP health check: `target` is a URL (http) or host:port (tcp)."""

    kind: Literal["http", "tcp"]
    target: str
    interval: str = "10s"
    timeout: str = "5s"
    deregister_after: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("http", "tcp"):
            raise InputError(f"check kind must be http or tcp, got {self.kind!r}")
        # Durations are kept as Go prints them ("1m" -> "1m0s"), as Consul echoes them back.
        for name in ("interval", "timeout", "deregister_after"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, format_duration(parse_duration(value)))

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            self.kind.upper(): self.target,
            "Interval": self.interval,
            "Timeout": self.timeout,
        }
        if self.deregister_after:
            payload["DeregisterCriticalServiceAfter"] = self.deregister_after
        return payload


@dataclass(frozen=True)
class ServiceRegistration:
    """A service instance as swarm registers it with the Consul agent."""

    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    check: CheckSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __hash__(self) -> int:
        meta = tuple(sorted(self.meta.items()))
        return hash((self.id, self.name, self.address, self.port, self.tags, meta, self.check))

    def to_payload(self) -> dict[str, Any]:
        """Body of PUT /v1/agent/service/register."""
        payload: dict[str, Any] = {
            "ID": self.id,
            "Name": self.name,
            "Address": self.address,
            "Port": self.port,
            "Tags": list(self.tags),
            "Meta": dict(self.meta),
        }
        if self.check is not None:
            payload["Check"] = self.check.to_payload()
        return payload


@dataclass(frozen=True)
class CheckStatus:
    check_id: str
    name: str
    status: str
    output: str


@dataclass(frozen=True)
class ServiceHealth:
    """One service instance on one node with its aggregated status (worst check wins)."""

    service_id: str
    name: str
    node: str
    address: str
    port: int
    status: str
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    checks: tuple[CheckStatus, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __hash__(self) -> int:
        return hash((self.service_id, self.node, self.status, self.checks))


def parse_duration(value: str) -> float:
    """Seconds from a Go duration such as "10s", "1m30s", "500ms"."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise InputError(f'invalid duration "{value}" (expected e.g. "10s", "1m30s", "500ms")')
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
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=lambda s: _SEVERITY.get(s, 2), default=PASSING)


# --------------------------------------------------------------------------- client


class _Consul(consul.Consul):  # type: ignore[misc]
    """py-consul's client with its ACL token held as a `Secret`: py-consul keeps the token as
    a plain attribute, which a repr, `vars()` or a traceback with locals would print."""

    _secret: Secret | None = None

    @property
    def token(self) -> str | None:
        return self._secret.reveal() if self._secret is not None else None

    @token.setter
    def token(self, value: str | Secret | None) -> None:
        self._secret = Secret(value, "consul-token") if isinstance(value, str) and value else (
            value if isinstance(value, Secret) else None)


class ConsulClient:
    """swarm's view of one Consul agent (the control node's).

    TLS: an https `addr` is verified against `ca_cert` (else the system CAs); `client_cert`
    and `client_key` are sent when the agent asks for them (`verify_incoming`).
    """

    def __init__(
        self, addr: str, token: Secret | str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
        ca_cert: str | None = None, client_cert: tuple[str, str] | None = None,
    ) -> None:
        parts = urlsplit(addr if "://" in addr else f"http://{addr}")
        self.addr = addr.rstrip("/")
        if not parts.hostname:
            raise InputError(
                f"not a Consul address: {addr!r}", hint="use e.g. http://10.0.0.1:8500"
            )
        if token is None:
            token = os.environ.get("CONSUL_HTTP_TOKEN") or None
        self._token = Secret(token, "consul-token") if isinstance(token, str) else token
        self._consul = _Consul(
            host=parts.hostname,
            port=parts.port or 8500,
            scheme=parts.scheme or "http",
            verify=ca_cert if ca_cert else True,
            cert=client_cert,
            connections_timeout=timeout,
        )
        # py-consul prefers CONSUL_HTTP_TOKEN over the token it is given; ours wins.
        self._consul.token = self._token

    @classmethod
    def from_inventory(cls, settings: Any, resolve: Callable[[str | None], Any]) -> ConsulClient:
        """A client as the inventory's `consul:` block says: address, TLS files, and the ACL token
        by the one rule (`consul_read.consul_token`)."""
        access = access_of(settings, resolve)
        cert = access.tls.client_cert
        return cls(settings.addr, consul_token(access), ca_cert=str(access.tls.ca_cert) if access.tls.ca_cert else None,
                   client_cert=(str(cert[0]), str(cert[1])) if cert else None)

    def __repr__(self) -> str:
        return f"ConsulClient(addr={self.addr!r}, token={'set' if self._token else 'none'})"

    # --- registration

    def register(self, reg: ServiceRegistration) -> bool:
        """Register (or update) a service instance; False if the agent already had it."""
        current = self._call(self._consul.agent.services, "list services")
        checks = self._call(self._consul.agent.checks, "list checks")
        if _same_registration(reg, current.get(reg.id), checks):
            return False
        self._call(
            partial(
                self._consul.agent.service.register,
                reg.name,
                service_id=reg.id,
                address=reg.address,
                port=reg.port,
                tags=list(reg.tags),
                meta=dict(reg.meta),
                check=reg.check.to_payload() if reg.check else None,
                replace_existing_checks=True,
            ),
            f"register service {reg.id}",
        )
        log.info("consul: registered %s (%s:%d)", reg.id, reg.address, reg.port)
        return True

    def deregister(self, service_id: str) -> bool:
        """Remove a service instance; False if the agent did not have it (404)."""
        removed = bool(
            self._call(
                partial(self._consul.agent.service.deregister, service_id),
                f"deregister service {service_id}",
            )
        )
        if removed:
            log.info("consul: deregistered %s", service_id)
        return removed

    def registered(self) -> dict[str, dict[str, Any]]:
        """The agent's services by ID, as /v1/agent/services returns them."""
        return dict(self._call(self._consul.agent.services, "list services"))

    def registrations(self) -> dict[str, ServiceRegistration]:
        """The agent's services rebuilt as `ServiceRegistration`s, checks included, so that a
        rollback can re-register exactly what was there (`register(snapshot[id])`)."""
        services = self._call(self._consul.agent.services, "list services")
        checks = self._call(self._consul.agent.checks, "list checks")
        return {
            sid: _registration_from(
                entry, [c for c in checks.values() if c.get("ServiceID") == sid]
            )
            for sid, entry in services.items()
        }

    # --- health

    def services_with_health(self, names: Iterable[str] | None = None) -> list[ServiceHealth]:
        """Every instance of every (or the named) service with its aggregated status."""
        if names is None:
            _, catalog = self._call(self._consul.catalog.services, "list the catalog")
            names = [n for n in catalog if n != "consul"]
        found: list[ServiceHealth] = []
        for name in sorted(set(names)):
            _, entries = self._call(
                partial(self._consul.health.service, name), f"read health of {name}"
            )
            found.extend(_health_from_entry(e) for e in entries)
        return found

    def wait_status(
        self,
        service_ids: Iterable[str],
        want: str = PASSING,
        *,
        timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, str]:
        """Wait until every service ID has status `want`; raise with the last statuses seen."""
        wanted = set(service_ids)
        deadline = clock() + timeout
        delay = 0.2
        while True:
            seen = self._statuses(wanted)
            if all(seen.get(sid) == want for sid in wanted):
                return seen
            if clock() >= deadline:
                raise ServiceError(
                    f"Consul at {self.addr}: services not {want} after {timeout:g}s: "
                    + ", ".join(
                        f"{sid}={seen.get(sid, 'not registered')}" for sid in sorted(wanted)
                    ),
                    hint="look at the checks' output with `swarm status` or in the Consul UI",
                )
            sleep(min(delay, max(0.0, deadline - clock())))
            delay = min(delay * 1.5, 2.0)

    def _statuses(self, service_ids: set[str]) -> dict[str, str]:
        registered = self.registered()
        names = {registered[sid]["Service"] for sid in service_ids if sid in registered}
        return {
            h.service_id: h.status
            for h in self.services_with_health(names)
            if h.service_id in service_ids
        }

    # --- error handling

    def _call(self, func: Callable[[], T], action: str) -> T:
        try:
            return func()
        except requests.exceptions.RequestException as err:
            self._fail_unreachable(err, action)
        except consul.exceptions.ConsulException as err:
            self._fail(err, action)

    def _fail_unreachable(self, err: Exception, action: str) -> NoReturn:
        raise ServiceError(
            f"Consul at {self.addr} is unreachable ({type(err).__name__}) while trying to {action}",
            hint="check that Consul runs on the control node and that inventory consul.addr "
            "points at it",
        ) from None

    def _fail(self, err: consul.exceptions.ConsulException, action: str) -> NoReturn:
        text = scrub(str(err)).strip()
        if isinstance(err, consul.exceptions.ACLPermissionDenied):
            raise self._acl_error(text, action) from None
        if "Missing index header" in text:
            raise ServiceError(
                f"{self.addr} answered without an X-Consul-Index header while trying to "
                f"{action}: that is not a Consul agent",
                hint="check inventory consul.addr (a proxy or another service answers there)",
            ) from None
        if "No cluster leader" in text:
            raise ServiceError(
                f"Consul at {self.addr} has no cluster leader (while trying to {action})",
                hint="wait for Consul to elect a leader (check its log), then re-run",
            ) from None
        raise ServiceError(
            f"Consul at {self.addr}: {action} failed: {text or type(err).__name__}",
            hint="see the Consul agent log for details",
        ) from None

    def _acl_error(self, text: str, action: str) -> ServiceError:
        if "ACL not found" in text:
            return ServiceError(
                f"Consul at {self.addr} does not know the ACL token (403 ACL not found) "
                f"while trying to {action}",
                hint="set CONSUL_HTTP_TOKEN (or the inventory's consul token) to a valid token",
            )
        who = "the ACL token" if self._token else "no ACL token was given and the anonymous token"
        return ServiceError(
            f"Consul at {self.addr}: permission denied to {action}: {who} lacks the permission "
            f"(403 {text})",
            hint="set CONSUL_HTTP_TOKEN (or the inventory's consul token) to a token with "
            "service:write / node:read",
        )


# --------------------------------------------------------------------------- comparison


def _same_registration(
    reg: ServiceRegistration, current: Mapping[str, Any] | None, checks: Mapping[str, Any]
) -> bool:
    if current is None:
        return False
    same_service = (
        current.get("Service") == reg.name
        and (current.get("Address") or "") == reg.address
        and int(current.get("Port") or 0) == reg.port
        and list(current.get("Tags") or []) == list(reg.tags)
        and dict(current.get("Meta") or {}) == dict(reg.meta)
    )
    mine = [c for c in checks.values() if c.get("ServiceID") == reg.id]
    return same_service and _same_checks(reg.check, mine)


def _same_checks(spec: CheckSpec | None, current: list[Mapping[str, Any]]) -> bool:
    if spec is None:
        return not current
    if len(current) != 1:
        return False
    definition = current[0].get("Definition") or {}
    return (
        current[0].get("Type") == spec.kind
        and definition.get(spec.kind.upper()) == spec.target
        and _seconds(definition.get("Interval")) == parse_duration(spec.interval)
        and _seconds(definition.get("Timeout")) == parse_duration(spec.timeout)
        and _seconds(definition.get("DeregisterCriticalServiceAfter"))
        == (parse_duration(spec.deregister_after) if spec.deregister_after else 0.0)
    )


def _seconds(value: Any) -> float:
    if value in (None, "", "0", 0):
        return 0.0
    try:
        return parse_duration(str(value))
    except InputError:
        return -1.0


def _registration_from(
    entry: Mapping[str, Any], checks: list[Mapping[str, Any]]
) -> ServiceRegistration:
    return ServiceRegistration(
        id=str(entry["ID"]),
        name=str(entry["Service"]),
        address=str(entry.get("Address") or ""),
        port=int(entry.get("Port") or 0),
        tags=tuple(entry.get("Tags") or ()),
        meta=dict(entry.get("Meta") or {}),
        check=_check_from(checks[0]) if len(checks) == 1 else None,
    )


def _check_from(check: Mapping[str, Any]) -> CheckSpec | None:
    """The CheckSpec of an HTTP/TCP check from /v1/agent/checks (None for other kinds)."""
    kind = check.get("Type")
    definition = check.get("Definition") or {}
    if kind not in ("http", "tcp") or not definition.get(str(kind).upper()):
        return None
    target = definition[str(kind).upper()]
    deregister = definition.get("DeregisterCriticalServiceAfter") or ""
    return CheckSpec(
        kind="http" if kind == "http" else "tcp",
        target=str(target),
        interval=str(definition.get("Interval") or check.get("Interval") or "10s"),
        timeout=str(definition.get("Timeout") or check.get("Timeout") or "5s"),
        deregister_after=deregister if _seconds(deregister) > 0 else None,
    )


def _health_from_entry(entry: Mapping[str, Any]) -> ServiceHealth:
    svc, node = entry["Service"], entry["Node"]
    checks = tuple(
        CheckStatus(c["CheckID"], c.get("Name", ""), c["Status"], c.get("Output", ""))
        for c in entry.get("Checks") or []
    )
    return ServiceHealth(
        service_id=svc["ID"],
        name=svc["Service"],
        node=node["Node"],
        address=svc.get("Address") or node.get("Address", ""),
        port=int(svc.get("Port") or 0),
        status=worst(c.status for c in checks),
        tags=tuple(svc.get("Tags") or ()),
        meta=MappingProxyType(dict(svc.get("Meta") or {})),
        checks=checks,
    )


def access_of(settings: Any, resolve: Callable[[str | None], Any]) -> ConsulAccess:
    """The inventory's `consul:` block as a `ConsulAccess` (paths resolved like every inventory path)."""
    cert, key = resolve(settings.client_cert), resolve(settings.client_key)
    return ConsulAccess(addr=str(settings.addr), token_file=resolve(settings.token_file), token_env=settings.token_env,
                        tls=Tls(ca_cert=resolve(settings.ca_cert), client_cert=(cert, key) if cert and key else None))
