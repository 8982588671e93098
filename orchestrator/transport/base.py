"""The narrow transport protocol every step talks to: run, put, get, close.

A transport is one connection to one host. It runs `Command`s / `Script`s (see
`orchestrator.commands`), uploads file bodies as bytes and reads files back. Each
transport counts what it did (`TransportStats`), so tests and benchmarks can assert
"a no-op run costs one connection and one command per host".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from orchestrator.commands import Runnable, Script, StepResult, as_command
from orchestrator.errors import CommandFailed


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
