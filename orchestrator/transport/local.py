"""A transport that runs commands on this machine via `sh -c`, for tests and the lab.

Same interface and the same command strings as the SSH transport, so a step can be
exercised end to end without a server.
"""

from __future__ import annotations

import asyncio
import os
import signal

from orchestrator.commands import Runnable, as_command, cat_file, write_file
from orchestrator.errors import TransportError
from orchestrator.transport.base import (
    Result,
    TransportStats,
    check_result,
    describe,
    make_result,
)


class LocalTransport:
    """Runs every command through a local `/bin/sh -c`."""

    def __init__(self, host: str = "localhost", *, command_timeout: float | None = None) -> None:
        self._host = host
        self._timeout = command_timeout
        self._stats = TransportStats(connections=1)

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
        shell = as_command(command).shell
        status, out, err = await self._exec(
            shell, input, timeout or self._timeout, describe(command)
        )
        self._stats.count_command(shell, len(input or b"") + len(shell), len(out) + len(err))
        result = make_result(command, status, out, err)
        return check_result(self._host, result) if check else result

    async def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        await self.run(write_file(remote_path, mode), input=data)
        self._stats.puts += 1

    async def get(self, remote_path: str) -> bytes:
        shell = cat_file(remote_path).shell
        status, out, err = await self._exec(shell, None, self._timeout, shell)
        self._stats.count_command(shell, len(shell), len(out) + len(err))
        self._stats.gets += 1
        check_result(self._host, make_result(cat_file(remote_path), status, out, err))
        return out

    async def close(self) -> None:
        return None

    async def _exec(
        self, shell: str, input: bytes | None, timeout: float | None, label: str
    ) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            shell,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # so a timeout can kill the whole process group
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input or b""), timeout)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise TransportError(
                self._host,
                f"command timed out after {timeout}s: {label}",
                hint="raise command_timeout for slow steps",
            ) from None
        return proc.returncode or 0, out, err
