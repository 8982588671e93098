"""A transport that runs commands on this machine via `sh -c`, for tests and the lab.

Same interface and the same command strings as the SSH transport, so a step can be
exercised end to end without a server.
"""

from __future__ import annotations

import asyncio
import os
import signal

from orchestrator.transport.base import ExecTimeout, ShellTransport


class LocalTransport(ShellTransport):
    """Runs every command through a local `/bin/sh -c`."""

    def __init__(self, host: str = "localhost", *, command_timeout: float | None = None) -> None:
        super().__init__(host, command_timeout=command_timeout)
        self.stats.connections = 1

    async def _exec(
        self, shell: str, input: bytes | None, timeout: float | None
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
            raise ExecTimeout() from None
        return (proc.returncode if proc.returncode is not None else -1), out, err
