"""JSON over HTTP(S) for the few reads a run makes before anything heavy is loaded.

Vault's KV reads (`vault_kv.py`) and Consul's registrations (`consul_read.py`) go through
here: one `http.client` connection per request, TLS verified against the inventory's CA
(else the system's), a client certificate when the server asks for one, a timeout. It
costs the interpreter ~14 ms to import (`http.client` + `ssl`, imported in the reader's
thread), where hvac or py-consul bring `requests` (~60-75 ms): that difference is what
keeps a no-op deploy near the cost of its SSH connections. Admin work (writing secrets, bootstrapping Vault, registering
services) uses the real clients, hvac and py-consul.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Tls:
    """How to check an https server, and who we are when it asks."""

    ca_cert: Path | None = None
    client_cert: tuple[Path, Path] | None = None      # (certificate, key)

    def context(self) -> ssl.SSLContext:
        import ssl  # in the caller's thread: see `request`

        context = ssl.create_default_context(cafile=str(self.ca_cert) if self.ca_cert else None)
        if self.client_cert is not None:
            context.load_cert_chain(str(self.client_cert[0]), str(self.client_cert[1]))
        return context


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON; None when it is not JSON (a proxy's page, an empty body)."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


def request(method: str, url: str, path: str, *, headers: dict[str, str] | None = None,
            body: Any = None, tls: Tls = Tls(), timeout: float = DEFAULT_TIMEOUT_S) -> Answer:
    """One request to `url` + `path`; a failure on the way (network, TLS, a garbled answer)
    raises OSError, which the caller words for its service."""
    # Imported here, in the reader threads a run starts while its SSH connections open:
    # http.client (with the email package it parses headers with) and ssl are ~14 ms of
    # imports (python -X importtime, 2026-12-06) off the way to a no-op deploy's connects.
    from http.client import HTTPConnection, HTTPException, HTTPSConnection

    parts = urllib.parse.urlsplit(url)
    conn: HTTPConnection
    if parts.scheme == "https":
        conn = HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=timeout, context=tls.context())
    else:
        conn = HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    data = json.dumps(body).encode() if body is not None else None
    sent = {**(headers or {}), **({"Content-Type": "application/json"} if data is not None else {})}
    try:
        conn.request(method, parts.path.rstrip("/") + path, body=data, headers=sent)
        answer = conn.getresponse()
        return Answer(answer.status, answer.read())
    except HTTPException as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
