"""A transport for `--check`: reads pass through, every change is recorded instead.

`RecordingTransport` wraps a real transport (or none). Commands flagged read-only
(`Command.mutates is False`, or a `Script` of only such commands) run for real so the
facts a step plans from are true; mutating commands, bare argv tuples and every `put`
are only recorded and answered with a successful empty `Result`. The records are what
`--check` reports ("would run ...", "would write ... (mode, size, sha256)").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from orchestrator.commands import Runnable, Script, StepResult, as_command, mutates
from orchestrator.errors import TransportError
from orchestrator.transport.base import Result, Transport, TransportStats, make_result


@dataclass(frozen=True)
class RecordedRun:
    """A mutating command that `--check` did not run."""

    host: str
    command: str


@dataclass(frozen=True)
class RecordedPut:
    """A file that `--check` did not write; `data` stays local (for `--diff`)."""

    host: str
    path: str
    mode: int
    data: bytes = field(repr=False)  # may be a secret env file: never in a repr

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def describe(self) -> str:
        return f"write {self.path} (mode {self.mode:04o}, {len(self.data)} bytes)"


Recorded = RecordedRun | RecordedPut


class RecordingTransport:
    """Let read-only commands through to `inner`; record everything that changes."""

    def __init__(self, inner: Transport | None = None, *, host: str | None = None) -> None:
        if inner is None and host is None:
            raise ValueError("RecordingTransport needs an inner transport or a host name")
        self.inner = inner
        self._host = host or (inner.host if inner else "")
        self.records: list[Recorded] = []
        self._stats = TransportStats()

    @property
    def host(self) -> str:
        return self._host

    @property
    def stats(self) -> TransportStats:
        return self.inner.stats if self.inner else self._stats

    @property
    def changes(self) -> list[Recorded]:
        return list(self.records)

    async def run(
        self,
        command: Runnable,
        *,
        timeout: float | None = None,
        check: bool = True,
        input: bytes | None = None,
    ) -> Result:
        if mutates(command):
            return self._record(command)
        inner = self._require_inner(command)
        return await inner.run(command, timeout=timeout, check=check, input=input)

    async def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        self.records.append(RecordedPut(self._host, remote_path, mode, bytes(data)))

    async def get(self, remote_path: str) -> bytes:
        return await self._require_inner(remote_path).get(remote_path)

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()

    def _record(self, command: Runnable) -> Result:
        if not isinstance(command, Script):
            self.records.append(RecordedRun(self._host, as_command(command).shell))
            return make_result(command, 0, b"", b"")
        changing = [c for c in command.commands if c.mutates]
        self.records.extend(RecordedRun(self._host, c.shell) for c in changing)
        steps = tuple(StepResult(c, 0, "", "") for c in command.commands)
        return Result(0, "", "", "; ".join(c.shell for c in changing), steps)

    def _require_inner(self, what: object) -> Transport:
        if self.inner is None:
            raise TransportError(self._host, f"--check without a connection cannot read: {what}")
        return self.inner
