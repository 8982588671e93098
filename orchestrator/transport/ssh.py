"""SSH transport on asyncssh: one connection per host, reused for every command.

`SshTransport` opens its connection lazily (or via `connect()`) and runs every
command, upload and download over it, each command with its own timeout. Host keys are
always verified against the inventory's known_hosts file; an unknown or changed key is
refused with a hint, and `trust()` is the one explicit way to record a key.
Connection failures become one-line `TransportError`s that say what to do.

Keepalives (`keepalive_interval` x `keepalive_count`, from the inventory) notice a dead
link: the connection is closed and every command on it fails with a `TransportError`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.addresses import host_port
from orchestrator.errors import InputError, TransportError
from orchestrator.transport.base import (
    ExecTimeout,
    ShellTransport,
)
from orchestrator.transport.dial import Dial, NoAnswer, answered, dial
from orchestrator.transport.sshlib import asyncssh

if TYPE_CHECKING:
    from orchestrator.config.inventory import Inventory, Node

T = TypeVar("T")

DEFAULT_FORKS = 64
# OpenSSH's MaxSessions defaults to 10 channels per connection; stay under it.
MAX_CHANNELS = 8


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach one node (the inventory's ssh block, resolved)."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: float = 10.0
    command_timeout: float | None = 120.0
    keepalive_interval: float = 10.0
    keepalive_count: int = 3
    answer_window: float | None = None    # an optional node: a TCP connect must answer this fast
    early: Dial | None = field(default=None, compare=False, repr=False)   # its connect, started early

    @property
    def endpoint(self) -> str:
        return host_port(self.address, self.port)

    def as_record(self) -> dict[str, Any]:
        """The target as JSON-able data (the plan record keeps it; nothing secret in it)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "early"}
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> SshTarget:
        paths = {k: Path(data[k]) if data.get(k) else None for k in ("key", "known_hosts")}
        return cls(**{**data, **paths})


def target_for(inventory: Inventory, node: Node, *, optional: bool = False) -> SshTarget:
    """The node's resolved ssh block (paths relative to the inventory, ~ expanded); the one
    place a target is built. An optional node gets its connect window."""
    ssh = node.ssh
    return SshTarget(
        name=node.name,
        address=node.address,
        port=ssh.port,
        user=ssh.user,
        key=inventory.resolve_path(ssh.key),
        known_hosts=inventory.resolve_path(ssh.known_hosts),
        connect_timeout=ssh.connect_timeout,
        command_timeout=ssh.command_timeout,
        keepalive_interval=ssh.keepalive_interval,
        keepalive_count=ssh.keepalive_count,
        answer_window=ssh.optional_window if optional else None,
    )


class SshTransport(ShellTransport):
    """One asyncssh connection to one host, opened once and reused."""

    def __init__(self, target: SshTarget) -> None:
        super().__init__(target.name, command_timeout=target.command_timeout)
        self.target = target
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(MAX_CHANNELS)
        self._forwards: dict[int, tuple[asyncssh.SSHClientConnection, asyncssh.SSHListener]] = {}

    async def __aenter__(self) -> SshTransport:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_connected(self) -> bool:
        """Open and not closed under us (a killed sshd closes it without a word)."""
        return self._conn is not None and not self._conn.is_closed()

    async def connect(self) -> None:
        """Open the connection unless it is open already (safe to call concurrently)."""
        async with self._lock:
            if self._conn is None:
                target, self.target = self.target, replace(self.target, early=None)  # a socket serves once
                self._conn = await open_connection(target)
                self.stats.connections += 1

    async def process(self, shell: str) -> asyncssh.SSHClientProcess[bytes]:
        """Start one command whose stdin/stdout the caller streams as bytes (model weights
        relayed node to node: orchestrator/models/transfer.py); the caller waits for it."""
        await self.connect()
        assert self._conn is not None
        self.stats.count_command(shell, len(shell), 0)
        return await self._conn.create_process(shell, encoding=None)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()

    async def _exec(
        self, shell: str, input: bytes | None, timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        await self.connect()
        conn = self._conn
        assert conn is not None
        try:
            async with self._channels:
                proc = await _wait(conn, shell, input, timeout)
        except asyncssh.TimeoutError as exc:
            raise ExecTimeout(_as_bytes(exc.stdout), _as_bytes(exc.stderr)) from None
        except (asyncssh.Error, OSError) as exc:
            self._forget(conn)
            raise TransportError(
                self.host, f"connection to {self.target.endpoint} lost: {_reason(exc)}"
            ) from None
        if proc.returncode is None and getattr(proc, "exit_signal", None) is None:
            # the channel closed with neither an exit status nor a signal: the session (its
            # sshd) died under the command — the link is gone, not the command's verdict
            self._forget(conn)
            raise TransportError(
                self.host, f"connection to {self.target.endpoint} lost: the session ended mid-command"
            )
        return _exit_status(proc), _as_bytes(proc.stdout), _as_bytes(proc.stderr)

    async def forward_local(self, port: int) -> int:
        """A port on the controller's loopback that reaches the node's own 127.0.0.1:`port`
        through this connection (a service published on the node's loopback only)."""
        await self.connect()
        conn = self._conn
        assert conn is not None
        known = self._forwards.get(port)
        if known is not None and known[0] is conn:
            return int(known[1].get_port())
        try:
            listener = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", port)
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(self.host, f"cannot forward to its port {port}: {_reason(exc)}") from None
        self._forwards[port] = (conn, listener)
        return int(listener.get_port())

    async def exchange_unix(self, path: str, data: bytes, *, timeout: float | None = None) -> bytes:
        """Send `data` to a unix socket on the node and read its answer to the end, through this
        connection (OpenSSH streamlocal forwarding: no tool on the node, no other connection).
        A socket that cannot be opened is an OSError; a dead link a TransportError."""
        await self.connect()
        conn = self._conn
        assert conn is not None
        try:
            reader, writer = await asyncio.wait_for(conn.open_unix_connection(path), timeout)
            try:
                writer.write(data)
                return await asyncio.wait_for(reader.read(), timeout)
            finally:
                writer.close()
        except asyncssh.ChannelOpenError as exc:
            raise ConnectionRefusedError(f"{path}: {exc.reason}") from None
        except TimeoutError:
            raise TimeoutError(f"{path}: no answer within {timeout:g}s") from None
        except (asyncssh.Error, OSError) as exc:
            if isinstance(exc, OSError) and not conn.is_closed():
                raise
            self._forget(conn)
            raise TransportError(self.host, f"connection to {self.target.endpoint} lost: {_reason(exc)}") from None

    def _forget(self, conn: asyncssh.SSHClientConnection) -> None:
        if self._conn is conn:
            self._conn = None
        conn.abort()


async def _wait(
    conn: asyncssh.SSHClientConnection, shell: str, input: bytes | None, limit: float | None
) -> asyncssh.SSHCompletedProcess:
    """Run one command; on timeout kill it remotely and free the channel.

    stdin always ends: asyncssh closes it only for non-empty `input`, and a command that
    reads it (writing an empty file, say) would otherwise wait for the timeout."""
    process = await conn.create_process(shell, input=input or None, encoding=None)
    if not input:
        process.stdin.write_eof()
    try:
        return await process.wait(check=False, timeout=limit)
    except asyncssh.TimeoutError:
        # OpenSSH sends this to the command's process group; it cannot for root
        # logins without privilege separation, where the command runs on.
        process.send_signal("KILL")
        process.close()
        raise


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return b""


def _exit_status(proc: asyncssh.SSHCompletedProcess) -> int:
    if proc.returncode is not None:
        return proc.returncode
    return -1


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.reason
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- connect


async def open_connection(target: SshTarget) -> asyncssh.SSHClientConnection:
    """Connect and authenticate, or raise a one-line `TransportError` with a hint."""
    _check_files(target)
    try:
        sock = await _answering_socket(target) if target.answer_window is not None else None
        return await asyncio.wait_for(_connect(target, sock), target.connect_timeout)
    except NoAnswer:
        raise _unreachable(target, f"no answer within {target.answer_window:g}s: an optional node that "
                                   "is off") from None
    except TimeoutError:
        raise _unreachable(target, f"timed out after {target.connect_timeout:g}s") from None
    except asyncssh.HostKeyNotVerifiable:
        raise _host_key_error(target) from None
    except asyncssh.PermissionDenied:
        raise _auth_error(target) from None
    except asyncssh.KeyImportError as exc:
        raise TransportError(
            target.name,
            f"cannot load SSH key {target.key}: {exc}",
            hint="use an unencrypted key or one in a running ssh-agent",
        ) from None
    except ConnectionRefusedError:
        raise _unreachable(target, "connection refused") from None
    except (OSError, socket.gaierror) as exc:
        raise _unreachable(target, exc.strerror or str(exc)) from None
    except asyncssh.Error as exc:
        raise TransportError(
            target.name,
            f"SSH to {target.endpoint} failed: {_reason(exc)}",
            hint="check that an SSH server listens there",
        ) from None


async def _answering_socket(target: SshTarget) -> socket.socket:
    """A TCP connection made within the target's answer window (transport/dial.py), for
    asyncssh to go on over; the connect the run started early, if it did."""
    assert target.answer_window is not None
    attempt = target.early
    if attempt is None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(target.address, target.port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        attempt = dial(family, address)
    return await answered(attempt, target.answer_window)


async def unanswered(targets: Iterable[SshTarget]) -> dict[str, str]:
    """Of these optional targets, the ones that do not answer a TCP connect within their window
    (all at once): name -> why. For a command that reaches nodes by other means (verify)."""
    async def one(target: SshTarget) -> str | None:
        try:
            (await _answering_socket(target)).close()
        except NoAnswer:
            return f"no answer within {target.answer_window:g}s"
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    chosen = [t for t in targets if t.answer_window is not None]
    found = await asyncio.gather(*(one(t) for t in chosen))
    return {t.name: why for t, why in zip(chosen, found, strict=True) if why is not None}


def _connect(target: SshTarget, sock: socket.socket | None = None) -> Awaitable[asyncssh.SSHClientConnection]:
    return asyncssh.connect(
        target.address,
        target.port,
        sock=sock,
        username=target.user,
        client_keys=_keypairs(target.key) if target.key else (),
        known_hosts=_known_hosts(target.known_hosts) if target.known_hosts else (),
        agent_path=None if target.key else (),
        config=[],
        preferred_auth=("publickey",),
        connect_timeout=target.connect_timeout,
        login_timeout=target.connect_timeout,
        keepalive_interval=target.keepalive_interval,
        keepalive_count_max=target.keepalive_count,
    )


# Read once per run, not once per connection: the same key and known_hosts serve every node
# (200 nodes would otherwise parse a 200-line known_hosts 200 times). Keyed by the file's
# mtime and size, so a host key `swarm trust` records is seen by the next connection.
_FILES: dict[tuple[str, str, int, int], Any] = {}


def _cached(kind: str, path: Path, load: Callable[[str], Any]) -> Any:
    stat = path.stat()
    key = (kind, str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _FILES:
        _FILES[key] = load(str(path))
    return _FILES[key]


def _keypairs(path: Path) -> Any:
    return _cached("key", path, asyncssh.load_keypairs)


def _known_hosts(path: Path) -> Any:
    return _cached("known_hosts", path, asyncssh.read_known_hosts)


def check_local_files(targets: Iterable[SshTarget], where: str | None = None) -> None:
    """The SSH key and known_hosts files the targets name exist and can be read; else one
    InputError (exit 2, `where`: the inventory) before anything connects — never the same
    failure once per node, or once per check."""
    chosen = list(targets)
    for target in chosen:
        if target.key is not None and not target.key.is_file():
            raise InputError(f"SSH key {target.key} for {target.name} does not exist", file=where,
                             hint="set ssh.key in the inventory to your private key")
    users: dict[Path, list[str]] = {}
    for target in chosen:
        if target.known_hosts is not None:
            users.setdefault(target.known_hosts, []).append(target.name)
    for path, names in users.items():
        problem = known_hosts_problem(path)
        if problem is not None:
            raise known_hosts_error(path, problem, names, where)


def known_hosts_problem(path: Path) -> str | None:
    """Why host keys cannot be checked against `path` (None: it reads)."""
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a file"
    try:
        _known_hosts(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except ValueError as exc:  # asyncssh reads it as UTF-8 text
        return f"cannot be read ({type(exc).__name__})"
    return None


def known_hosts_error(path: Path, problem: str, nodes: Sequence[str], where: str | None = None) -> InputError:
    """A known_hosts file that is missing or unreadable: what it means, what to do (exit 2)."""
    shown = " ".join(nodes[:8]) + (" ..." if len(nodes) > 8 else "")
    return InputError(
        f"known_hosts file {path} {problem}: the host keys of {shown} cannot be verified",
        file=where,
        hint=f"record them after checking each fingerprint: `swarm trust {shown}` (a new project: "
             "`swarm init --probe`); or point ssh.known_hosts in the inventory (top level, or "
             "nodes.<name>.ssh.known_hosts) at the file that holds them",
    )


def _check_files(target: SshTarget) -> None:
    if target.key is not None and not target.key.is_file():
        raise TransportError(
            target.name,
            f"SSH key file {target.key} not found",
            hint="set ssh.key in the inventory to an existing private key",
        )
    if target.known_hosts is not None and not target.known_hosts.is_file():
        raise TransportError(
            target.name,
            f"known_hosts file {target.known_hosts} not found",
            hint=f"run `swarm trust {target.name}` to record the host key after checking "
            "its fingerprint",
        )


def _unreachable(target: SshTarget, why: str) -> TransportError:
    return TransportError(
        target.name,
        f"cannot reach {target.endpoint} ({why})",
        hint="is it up, is the address right?",
    )


def _auth_error(target: SshTarget) -> TransportError:
    key = target.key or "(default keys)"
    return TransportError(
        target.name,
        f"key {key} rejected for user {target.user} at {target.endpoint}",
        hint=f"add the public key to ~{target.user}/.ssh/authorized_keys "
        "on the node, or fix ssh.user / ssh.key",
    )


def _host_key_error(target: SshTarget) -> TransportError:
    path = target.known_hosts or "~/.ssh/known_hosts"
    if target.known_hosts and known_keys(target.known_hosts, target.address, target.port):
        return TransportError(
            target.name,
            f"host key of {target.endpoint} changed! possible MITM attack",
            hint=f"if the change is expected, remove the old entry for {target.address} "
            f"from {path} and run `swarm trust {target.name}`",
        )
    return TransportError(
        target.name,
        f"host key of {target.endpoint} is not in known_hosts {path}",
        hint=f"run `swarm trust {target.name}` to record it after checking its fingerprint",
    )


# --------------------------------------------------------------------------- host keys


@dataclass(frozen=True)
class HostKey:
    """A server's host key as seen on the wire: what `swarm trust` shows and records."""

    address: str
    port: int
    key: asyncssh.SSHKey

    @property
    def fingerprint(self) -> str:
        return str(self.key.get_fingerprint("sha256"))

    @property
    def algorithm(self) -> str:
        return self.key.get_algorithm()

    @property
    def known_hosts_line(self) -> str:
        public = self.key.export_public_key("openssh").decode().split()
        return f"{known_hosts_pattern(self.address, self.port)} {public[0]} {public[1]}\n"


def known_hosts_pattern(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def known_keys(path: Path, address: str, port: int) -> list[asyncssh.SSHKey]:
    """Host keys recorded for address:port in a known_hosts file (empty if none)."""
    if not path.is_file():
        return []
    matched = asyncssh.read_known_hosts(str(path)).match(address, address, port)
    unique = {key.public_data: key for key in matched[0]}  # host and addr may both match
    return list(unique.values())


async def fetch_host_key(address: str, port: int = 22, *, timeout: float = 10.0) -> HostKey:
    """Ask the server for its host key (no authentication, nothing recorded)."""
    target = SshTarget(name=address, address=address, port=port, connect_timeout=timeout)
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(address, port, config=[]), timeout
        )
    except TimeoutError:
        raise _unreachable(target, f"timed out after {timeout:g}s") from None
    except (OSError, asyncssh.Error) as exc:
        raise _unreachable(target, _reason(exc)) from None
    if key is None:
        raise TransportError(address, f"{target.endpoint} presented no host key")
    return HostKey(address, port, key)


def record_host_key(host_key: HostKey, known_hosts: Path) -> bool:
    """Append the key unless already recorded; refuse if a different one is recorded."""
    recorded = known_keys(known_hosts, host_key.address, host_key.port)
    if any(k.public_data == host_key.key.public_data for k in recorded):
        return False
    if recorded:
        raise TransportError(
            host_key.address,
            f"{known_hosts} already holds a different key for {host_port(host_key.address, host_key.port)}",
            hint="remove the old entry first if the change is expected",
        )
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    _append_line(known_hosts, host_key.known_hosts_line)
    return True


def _append_line(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with os.fdopen(fd, "a") as fh:
        fh.write(line)


async def trust(address: str, port: int, known_hosts: Path) -> HostKey:
    """Fetch a host key and record it: call only after the user confirmed."""
    host_key = await fetch_host_key(address, port)
    record_host_key(host_key, known_hosts)
    return host_key
