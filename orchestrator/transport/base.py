"""The narrow transport protocol every step talks to: run, put, get, close.

A transport is one connection to one host. It runs `Command`s / `Script`s (see
`orchestrator.commands`), uploads file bodies as bytes and reads files back. Each
transport counts what it did (`TransportStats`), so tests and benchmarks can assert
"a no-op run costs one connection and one command per host".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from orchestrator.commands import Runnable, Script, StepResult, as_command, cat_file, write_file
from orchestrator.errors import CommandFailed, TransportError


@dataclass(frozen=True)
class Result:
    """What a remote command did; `steps` splits a `Script` per command."""

    exit_status: int
    stdout: str
    stderr: str
    command: str = ""
    steps: tuple[StepResult, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)


@dataclass
class TransportStats:
    """Counters for one transport: connections opened, commands run, bytes moved."""

    connections: int = 0
    commands: int = 0
    puts: int = 0
    gets: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    command_log: list[str] = field(default_factory=list, repr=False)

    def __add__(self, other: TransportStats) -> TransportStats:
        return TransportStats(
            self.connections + other.connections,
            self.commands + other.commands,
            self.puts + other.puts,
            self.gets + other.gets,
            self.bytes_sent + other.bytes_sent,
            self.bytes_received + other.bytes_received,
            self.command_log + other.command_log,
        )

    def count_command(self, command: str, sent: int, received: int) -> None:
        self.commands += 1
        self.bytes_sent += sent
        self.bytes_received += received
        self.command_log.append(command)


@runtime_checkable
class Transport(Protocol):
    """One connection to one host."""

    @property
    def host(self) -> str: ...

    @property
    def stats(self) -> TransportStats: ...

    async def run(
        self,
        command: Runnable,
        *,
        timeout: float | None = None,
        check: bool = True,
        input: bytes | None = None,
    ) -> Result: ...

    async def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None: ...

    async def get(self, remote_path: str) -> bytes: ...

    async def close(self) -> None: ...


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def make_result(item: Runnable, exit_status: int, stdout: bytes, stderr: bytes) -> Result:
    """Build a `Result`, splitting a `Script`'s output per command."""
    command = as_command(item)
    out, err = decode(stdout), decode(stderr)
    if not isinstance(item, Script):
        return Result(exit_status, out, err, command.shell)
    steps = item.split(out, err)
    joined_out = "".join(s.stdout for s in steps)
    joined_err = "".join(s.stderr for s in steps)
    return Result(exit_status, joined_out, joined_err, describe(item), steps)


def describe(item: Runnable) -> str:
    """How a command reads in messages: a Script shows its commands, not its framing."""
    if isinstance(item, Script):
        joiner = " && " if item.stop_on_error else "; "
        return joiner.join(c.shell for c in item.commands)
    return as_command(item).shell


def check_result(host: str, result: Result) -> Result:
    """Raise `CommandFailed` naming the failing command (or script step)."""
    step = result.failed_step
    if step is not None:
        raise CommandFailed(host, step.command.shell, step.exit_status, step.stdout, step.stderr)
    if not result.ok:
        raise CommandFailed(host, result.command, result.exit_status, result.stdout, result.stderr)
    return result


class ShellTransport(ABC):
    """run/put/get for any transport that can execute one shell string with stdin.

    Subclasses implement `_exec`; this class counts, splits scripts, raises
    `CommandFailed` / timeout errors, and moves file bodies as bytes on stdin.
    """

    def __init__(self, host: str, *, command_timeout: float | None = None) -> None:
        self._host = host
        self.command_timeout = command_timeout
        self._stats = TransportStats()

    @property
    def host(self) -> str:
        return self._host

    @property
    def stats(self) -> TransportStats:
        return self._stats

    async def run(
        self,
        command: Runnable,
        *,
        timeout: float | None = None,
        check: bool = True,
        input: bytes | None = None,
    ) -> Result:
        status, out, err = await self._run_counted(command, input, timeout)
        result = make_result(command, status, out, err)
        return check_result(self._host, result) if check else result

    async def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        """Write bytes atomically: temp file created 0600, chmod `mode`, rename."""
        try:
            await self.run(write_file(remote_path, mode), input=data)
        except CommandFailed as exc:
            what = f"write {remote_path} (mode {mode:04o}, {len(data)} bytes)"
            raise CommandFailed(self._host, what, exc.exit_status, exc.stdout, exc.stderr) from None
        self._stats.puts += 1

    async def get(self, remote_path: str) -> bytes:
        command = cat_file(remote_path)
        status, out, err = await self._run_counted(command, None, None)
        check_result(self._host, make_result(command, status, out, err))
        self._stats.gets += 1
        return out

    async def close(self) -> None:
        return None

    @abstractmethod
    async def _exec(
        self, shell: str, input: bytes | None, timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        """Run one shell string; raise `ExecTimeout` when `timeout` expires."""

    async def _run_counted(
        self, item: Runnable, input: bytes | None, timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        shell = as_command(item).shell
        limit = timeout if timeout is not None else self.command_timeout
        try:
            status, out, err = await self._exec(shell, input, limit)
        except ExecTimeout as exc:
            raise self._timeout_error(item, limit, exc) from None
        self._stats.count_command(shell, len(shell) + len(input or b""), len(out) + len(err))
        return status, out, err

    def _timeout_error(
        self, item: Runnable, limit: float | None, exc: ExecTimeout
    ) -> TransportError:
        partial = make_result(item, -1, exc.stdout, exc.stderr)
        tail = partial.stderr.strip().splitlines()[-1:] or [""]
        msg = f"command timed out after {limit:g}s: {describe(item)}"
        if tail[0]:
            msg += f" (last stderr: {tail[0]})"
        return TransportError(self._host, msg, hint="raise ssh.command_timeout for slow steps")


class ExecTimeout(Exception):
    """Raised by `ShellTransport._exec` implementations; carries the partial output."""

    def __init__(self, stdout: bytes = b"", stderr: bytes = b"") -> None:
        super().__init__("timeout")
        self.stdout = stdout
        self.stderr = stderr
