"""What a service answers from the controller: its HTTP and TCP health probes.

`http_probe` asks one HTTP(S) probe (status, a body marker, JSON fields, a bearer key from
the secrets), `tcp_probe` connects; each gives an `Outcome` that says what was seen,
secrets scrubbed. The deploy's gate, a restore's gate and preflight's probes of protected
services all ask through here, over a `ProbeNetwork`: the real network trusting the
inventory's CAs, or a test's own boundary.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from orchestrator.addresses import http_url
from orchestrator.render.services import Probe
from orchestrator.secrets import Secret, scrub

if TYPE_CHECKING:
    from orchestrator.config.inventory import Inventory


@dataclass
class Outcome:
    ok: bool
    probe: str
    detail: str


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
        url = http_url(address, int(probe.port or 0), probe.path, getattr(probe, "scheme", "http"))
        resp = await client.get(url, headers=headers, timeout=probe.timeout)
    except httpx.HTTPError as exc:
        return Outcome(False, name, _http_error(exc))
    answer = scrub(f"{resp.status_code} {resp.text[:120].strip()!r}")
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
            return scrub(f"{resp.status_code} {path} = {got!r}, expected {want!r}")
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


async def tcp_connect(address: str, port: int, timeout: float) -> None:
    _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    writer.close()


async def tcp_probe(address: str, probe: Probe,
                    connect: Callable[[str, int, float], Awaitable[None]] = tcp_connect) -> Outcome:
    name = describe_probe(probe)
    try:
        await connect(address, int(probe.port or 0), probe.timeout)
    except (OSError, TimeoutError) as exc:
        return Outcome(False, name, f"cannot connect: {exc.__class__.__name__}")
    return Outcome(True, name, "connected")


@dataclass(frozen=True)
class ProbeNetwork:
    """How probes reach services: the real network, unless a test puts its own boundary here
    (an `httpx` transport and a TCP connect), as the replayed SSH transport is for nodes.

    An https probe trusts the system's CAs plus `ca_files`: the CAs the inventory configures
    (vault.ca_cert, consul.ca_cert), which sign the fleet's own TLS services."""

    http_transport: httpx.AsyncBaseTransport | None = None
    tcp: Callable[[str, int, float], Awaitable[None]] = tcp_connect
    ca_files: tuple[Path, ...] = ()

    @classmethod
    def for_inventory(cls, inventory: Inventory) -> ProbeNetwork:
        """The real network, trusting the CAs the inventory names."""
        spec = inventory.spec
        found = (inventory.resolve_path(spec.vault.ca_cert), inventory.resolve_path(spec.consul.ca_cert))
        return cls(ca_files=tuple(dict.fromkeys(p for p in found if p is not None)))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.http_transport, verify=self.verify())

    def verify(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for path in self.ca_files:
            context.load_verify_locations(cafile=str(path))
        return context
