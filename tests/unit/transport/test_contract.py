"""One behaviour for every transport: the same tests against local and SSH."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from orchestrator import commands as c
from orchestrator.errors import CommandFailed, TransportError
from orchestrator.transport.base import Transport
from orchestrator.transport.local import LocalTransport
from orchestrator.transport.recording import RecordingTransport
from orchestrator.transport.ssh import SshTransport

from .conftest import SSHD, SshServer

T = TypeVar("T")
Work = Callable[[Transport], Awaitable[T]]

KINDS = ["local", "ssh", "recording"]


@pytest.fixture(params=KINDS)
def using(request: pytest.FixtureRequest) -> Callable[[Work[T]], T]:
    kind = request.param
    if kind == "ssh" and not SSHD.exists():
        pytest.skip("needs /usr/sbin/sshd for a real SSH server")
    server: SshServer | None = request.getfixturevalue("sshd") if kind == "ssh" else None

    def make() -> Transport:
        if server is not None:
            return SshTransport(server.target())
        local = LocalTransport("node")
        return RecordingTransport(local) if kind == "recording" else local

    def call(work: Work[T]) -> T:
        async def main() -> T:
            transport = make()
            try:
                return await work(transport)
            finally:
                await transport.close()

        return asyncio.run(main())

    call.kind = kind  # type: ignore[attr-defined]
    return call


def test_read_only_result(using: Callable[[Work[str]], str]) -> None:
    async def work(t: Transport) -> str:
        return (await t.run(c.read_only("printf", "%s|", "a b", "$(x)"))).stdout

    assert using(work) == "a b|$(x)|"


def test_failure_names_command_and_status(using: Callable[[Work[None]], None]) -> None:
    async def work(t: Transport) -> None:
        await t.run(c.read_only("sh", "-c", "echo nope >&2; exit 9"))

    with pytest.raises(CommandFailed) as info:
        using(work)
    assert info.value.exit_status == 9 and info.value.host == "node"
    assert "nope" in str(info.value) and "exit 9" in info.value.command


def test_timeout_is_a_transport_error(using: Callable[[Work[None]], None]) -> None:
    async def work(t: Transport) -> None:
        await t.run(c.read_only("sleep", "20"), timeout=0.3)

    with pytest.raises(TransportError, match=r"timed out after 0\.3s: sleep 20"):
        using(work)


def test_put_get_roundtrip(using: Callable[[Work[bytes]], bytes], tmp_path: Path) -> None:
    path = tmp_path / "d" / "x.env"
    path.parent.mkdir()
    path.write_bytes(b"old")

    async def work(t: Transport) -> bytes:
        await t.put(b"A=\xc3\xa9\n\x00", str(path), mode=0o600)
        return await t.get(str(path))

    got = using(work)
    if path.read_bytes() == b"old":  # the recording transport only records
        assert got == b"old"
    else:
        assert got == b"A=\xc3\xa9\n\x00"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_put_failure_names_the_file(using: Callable[[Work[None]], None], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    async def work(t: Transport) -> None:
        await t.put(b"x", str(blocker / "x"))

    if using.kind == "recording":  # type: ignore[attr-defined]
        using(work)  # nothing is written, so nothing can fail
        return
    with pytest.raises(CommandFailed) as info:
        using(work)
    assert info.value.command == f"write {blocker}/x (mode 0644, 1 bytes)"
    assert "File exists" in str(info.value)  # mkdir -p of the parent failed
