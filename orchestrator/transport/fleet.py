"""The fleet's connections for one run: opened in parallel, kept, closed on every path.

`Fleet` owns one transport per node. `connect()` opens them all at once (at most `forks`
at a time) and returns per-host results (fabric's `GroupResult`): one bad host never
cancels the others. Nodes that could not be reached are remembered in `unreachable`;
the caller decides what that means (an optional node is skipped, a required one stops
the run before anything changed). `reconnect()` retries a node whose link dropped, for
an unwind that must still reach it. Use it as `async with Fleet(...) as fleet:` so every
connection is closed however the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from orchestrator.commands import Runnable
from orchestrator.errors import SwarmError, TransportError
from orchestrator.transport.base import Result, Transport, TransportStats
from orchestrator.transport.recording import RecordingTransport
from orchestrator.transport.ssh import (
    DEFAULT_FORKS,
    SshTarget,
    SshTransport,
    check_local_files,
    target_for,
)

if TYPE_CHECKING:
    from orchestrator.config.inventory import Inventory, Node

T = TypeVar("T")


class GroupResult(dict[str, "T | BaseException"], Generic[T]):
    """host -> result or the exception that host raised."""

    @property
    def succeeded(self) -> dict[str, T]:
        return {h: r for h, r in self.items() if not isinstance(r, BaseException)}

    @property
    def failed(self) -> dict[str, BaseException]:
        return {h: r for h, r in self.items() if isinstance(r, BaseException)}

    @property
    def ok(self) -> bool:
        return not self.failed


class Fleet:
    """Many transports driven in parallel, at most `forks` hosts at a time."""

    def __init__(self, transports: Iterable[Transport], *, forks: int = DEFAULT_FORKS) -> None:
        if forks < 1:
            raise ValueError("forks must be at least 1")
        self.transports: dict[str, Transport] = {t.host: t for t in transports}
        self.unreachable: dict[str, SwarmError] = {}
        self._forks = asyncio.Semaphore(forks)

    @classmethod
    def over_ssh(cls, targets: Iterable[SshTarget], *, forks: int = DEFAULT_FORKS,
                 check: bool = False, where: str | None = None) -> Fleet:
        """Real SSH transports; with `check`, wrapped so only read-only commands run. A key or
        known_hosts file that is missing or unreadable is bad input (exit 2, `where`: the
        inventory), said once before anything connects."""
        chosen = list(targets)
        check_local_files(chosen, where)
        made: list[Transport] = []
        for target in chosen:
            real = SshTransport(target)
            made.append(RecordingTransport(real) if check else real)
        return cls(made, forks=forks)

    @classmethod
    def for_nodes(cls, inventory: Inventory, nodes: Iterable[Node], *, forks: int = DEFAULT_FORKS,
                  check: bool = False, optional: Collection[str] = ()) -> Fleet:
        """SSH to these nodes as the inventory says (`optional`: nodes that get a connect window)."""
        targets = [target_for(inventory, n, optional=n.name in optional) for n in nodes]
        return cls.over_ssh(targets, forks=forks, check=check, where=str(inventory.path))

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getitem__(self, host: str) -> Transport:
        return self.transports[host]

    def __contains__(self, host: object) -> bool:
        return host in self.transports

    @property
    def hosts(self) -> list[str]:
        return list(self.transports)

    @property
    def reachable(self) -> list[str]:
        return [h for h in self.transports if h not in self.unreachable]

    async def map(self, work: Callable[[Transport], Awaitable[T]],
                  hosts: Iterable[str] | None = None) -> GroupResult[T]:
        """Run `work` once per host; every host gets its own result or exception."""
        chosen = list(self.transports if hosts is None else hosts)
        outcomes = await asyncio.gather(
            *(self._bounded(work, self.transports[h]) for h in chosen), return_exceptions=True
        )
        return GroupResult(zip(chosen, outcomes, strict=True))

    async def connect(self, hosts: Iterable[str] | None = None) -> GroupResult[None]:
        """Open the connections; failures are returned and kept in `unreachable`."""
        results = await self.map(_connect_transport, hosts)
        for host, outcome in results.items():
            if isinstance(outcome, BaseException):
                self.unreachable[host] = as_swarm_error(host, outcome)
            else:
                self.unreachable.pop(host, None)
        return results

    async def reconnect(self, host: str, *, attempts: int = 3, delay: float = 2.0) -> bool:
        """Try to reach a node again (its link dropped): True once it answers."""
        for attempt in range(attempts):
            result = await self.connect([host])
            if result.ok:
                return True
            if attempt + 1 < attempts:
                await asyncio.sleep(delay)
        return False

    async def run(self, command: Runnable, *, timeout: float | None = None, check: bool = True,
                  input: bytes | None = None) -> GroupResult[Result]:
        """The same command on every host."""

        async def one(transport: Transport) -> Result:
            return await transport.run(command, timeout=timeout, check=check, input=input)

        return await self.map(one)

    async def close(self) -> None:
        await asyncio.gather(*(t.close() for t in self.transports.values()), return_exceptions=True)

    def stats(self) -> Mapping[str, TransportStats]:
        return {h: t.stats for h, t in self.transports.items()}

    def total_stats(self) -> TransportStats:
        """Summed over hosts: a no-op run should be ~1 connection + 1 command each."""
        return sum(self.stats().values(), TransportStats())

    async def _bounded(self, work: Callable[[Transport], Awaitable[T]], t: Transport) -> T:
        async with self._forks:
            return await work(t)


def as_swarm_error(host: str, exc: BaseException) -> SwarmError:
    if isinstance(exc, SwarmError):
        return exc
    return TransportError(host, f"{type(exc).__name__}: {exc}")


async def _connect_transport(transport: Transport) -> None:
    connect = getattr(transport, "connect", None)
    if connect is None:
        connect = getattr(getattr(transport, "inner", None), "connect", None)
    if connect is not None:
        await connect()


ConnectionPool = Fleet
