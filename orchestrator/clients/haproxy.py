"""HAProxy's runtime API (the stats socket), reached through the node's SSH connection.

The front door's HAProxy opens its admin socket in its run directory on the node
(`<deploy_root>/run/<service>/admin.sock`, roles/haproxy); swarm opens that socket over the
run's own SSH connection to the node (OpenSSH's streamlocal forwarding, asyncssh's
`open_unix_connection`): no tool on the node and no other connection. One command per
connection, as HAProxy's non-interactive CLI answers.

What the rolling rollout uses (engine/rollout.py): `set server <backend>/<server> state
drain|ready`, `set server ... health up`, `show stat` (a server's current sessions),
`show servers state` (saved to the server-state file after every change, so a reload or a
restart keeps a drained server drained) and `show info` (the worker's pid: a reload that
took has a new one).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from orchestrator.errors import RuntimeFailure, TransportError

CALL_TIMEOUT = 10.0
STATES = ("ready", "drain", "maint")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


@runtime_checkable
class UnixLink(Protocol):
    """A connection that can exchange bytes with a unix socket on its node."""

    @property
    def host(self) -> str: ...

    async def exchange_unix(self, path: str, data: bytes, *, timeout: float | None = None) -> bytes: ...


class RuntimeApiError(RuntimeFailure):
    """HAProxy refused a command, or its socket could not be reached."""


def unix_link(transport: object) -> UnixLink:
    """The node connection as a way to its unix sockets (SSH; the replayed node in tests)."""
    if not isinstance(transport, UnixLink):
        raise RuntimeApiError(f"{getattr(transport, 'host', 'this node')}: the connection cannot reach a "
                              "unix socket on the node (HAProxy's runtime API needs SSH)")
    return transport


@dataclass(frozen=True)
class ServerStat:
    backend: str
    server: str
    sessions: int          # scur: connections the server holds now
    queued: int            # qcur
    status: str            # UP, DOWN, DRAIN, MAINT, no check, ...


class RuntimeApi:
    """One HAProxy's admin socket on `link`'s node."""

    def __init__(self, link: UnixLink, socket: str, *, service: str = "haproxy",
                 timeout: float = CALL_TIMEOUT) -> None:
        self.link, self.socket, self.service, self.timeout = link, socket, service, timeout

    @property
    def where(self) -> str:
        return f"{self.service} on {self.link.host}"

    async def call(self, command: str) -> str:
        if "\n" in command or ";" in command:
            raise ValueError(f"one runtime API command at a time: {command!r}")
        try:
            raw = await self.link.exchange_unix(self.socket, command.encode() + b"\n", timeout=self.timeout)
        except TransportError:
            raise
        except (TimeoutError, OSError) as exc:
            raise RuntimeApiError(f"{self.where}: its runtime API ({self.socket}) did not answer: "
                                  f"{exc or type(exc).__name__}",
                                  hint="is HAProxy running the config swarm renders? deploy its phase first "
                                       "(a front door from before the runtime API has no socket), or set "
                                       "`rollout: recreate` on the instances") from None
        return raw.decode("utf-8", errors="replace")

    async def set_state(self, backend: str, server: str, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"not a server state: {state!r}")
        await self._admin(f"set server {_name(backend)}/{_name(server)} state {state}")

    async def mark_up(self, backend: str, server: str) -> None:
        """Its own checks may not have seen it come back yet; swarm's gate has."""
        await self._admin(f"set server {_name(backend)}/{_name(server)} health up")

    async def server(self, backend: str, server: str) -> ServerStat:
        for stat in parse_stat(await self.call("show stat")):
            if (stat.backend, stat.server) == (backend, server):
                return stat
        raise RuntimeApiError(f"{self.where} has no server {server} in backend {backend}: "
                              "its running config does not route to that instance",
                              hint="deploy the front door's phase first (its config names every instance)")

    async def servers_state(self) -> str:
        text = await self.call("show servers state")
        if not text.startswith("1\n"):
            raise RuntimeApiError(f"{self.where}: unexpected `show servers state` answer: {text[:80]!r}")
        return text

    async def worker_pid(self) -> int:
        match = re.search(r"^Pid: (\d+)$", await self.call("show info"), re.M)
        if match is None:
            raise RuntimeApiError(f"{self.where}: `show info` did not say its pid")
        return int(match.group(1))

    async def _admin(self, command: str) -> None:
        answer = (await self.call(command)).strip()
        if answer:  # HAProxy answers nothing when an admin command took
            raise RuntimeApiError(f"{self.where} refused `{command}`: {answer[:200]}")


def parse_stat(text: str) -> list[ServerStat]:
    """`show stat` CSV (header `# pxname,svname,...`) -> its server rows."""
    body = text.lstrip("# ")
    out = []
    for row in csv.DictReader(io.StringIO(body)):
        name = row.get("svname") or ""
        if name in ("FRONTEND", "BACKEND", ""):
            continue
        out.append(ServerStat(backend=row.get("pxname", ""), server=name, sessions=_int(row.get("scur")),
                              queued=_int(row.get("qcur")), status=row.get("status", "")))
    return out


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"not an HAProxy backend or server name: {value!r}")
    return value
