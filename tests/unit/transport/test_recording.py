"""--check: reads pass through to the real transport, changes are only recorded.

Uses LocalTransport as the "real" one, so a test can see that nothing on disk moved.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from orchestrator import commands as c
from orchestrator.errors import CommandFailed, TransportError
from orchestrator.transport.base import Transport
from orchestrator.transport.local import LocalTransport
from orchestrator.transport.recording import RecordedPut, RecordedRun, RecordingTransport

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def snapshot(root: Path) -> dict[str, bytes | str]:
    tree: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            tree[rel] = (
                os.readlink(path)
                if path.is_symlink()
                else (path.read_bytes() if path.is_file() else "dir")
            )
    return tree


@pytest.fixture
def node(tmp_path: Path) -> Path:
    (tmp_path / "releases" / "r1").mkdir(parents=True)
    (tmp_path / "releases" / "r1" / "compose.yml").write_text("services: {}\n")
    (tmp_path / "current").symlink_to(tmp_path / "releases" / "r1")
    return tmp_path


def test_check_changes_nothing_and_records_everything(node: Path) -> None:
    before = snapshot(node)
    check = RecordingTransport(LocalTransport("starlord"))
    new = node / "releases" / "r2"

    async def deploy(t: Transport) -> str | None:
        current = (await t.run(c.read_link(str(node / "current")))).stdout.strip()
        await t.run(c.lock_acquire(str(node / ".lock")), input=b'{"who": "me"}')
        await t.put(b"SECRET=1\n", str(new / "env" / "vllm.env"), mode=0o600)
        await t.run(
            c.Script.of(c.mkdir_p(str(new)), c.switch_symlink(str(new), str(node / "current")))
        )
        await t.run(("rm", "-rf", str(node)))  # a bare argv tuple counts as mutating
        hashed = await t.run(c.sha256_tree(str(node / "releases")))
        assert c.parse_sha256sum(hashed.stdout)  # read-only: really ran
        return current

    assert run(deploy(check)) == str(node / "releases" / "r1")
    assert snapshot(node) == before
    kinds = [type(r).__name__ for r in check.records]
    assert kinds == ["RecordedRun", "RecordedPut", "RecordedRun", "RecordedRun", "RecordedRun"]
    put = check.records[1]
    assert isinstance(put, RecordedPut)
    assert put.mode == 0o600 and put.data == b"SECRET=1\n" and put.host == "starlord"
    assert put.describe() == f"write {new / 'env' / 'vllm.env'} (mode 0600, 9 bytes)"
    assert "SECRET" not in put.describe()
    assert check.records[2] == RecordedRun("starlord", c.mkdir_p(str(new)).shell)


def test_read_only_script_passes_through(node: Path) -> None:
    inner = LocalTransport()
    check = RecordingTransport(inner)
    script = c.Script.of(c.read_file(str(node / "current" / "compose.yml")), c.uname_m())
    result = run(check.run(script))
    assert c.parse_read_file(result.steps[0].stdout) == "services: {}\n"
    assert check.records == [] and inner.stats.commands == 1


def test_recorded_script_result_looks_successful() -> None:
    check = RecordingTransport(host="thanos")
    script = c.Script.of(c.uname_m(), c.mkdir_p("/opt/x"))
    result = run(check.run(script))
    assert result.ok and result.failed_step is None
    assert [s.exit_status for s in result.steps] == [0, 0]
    assert check.records == [RecordedRun("thanos", c.mkdir_p("/opt/x").shell)]


def test_without_inner_reads_fail_clearly() -> None:
    check = RecordingTransport(host="oracle")
    with pytest.raises(TransportError, match="cannot read"):
        run(check.run(c.uname_m()))
    run(check.put(b"x", "/opt/y"))
    assert len(check.changes) == 1


def test_read_failures_still_raise(node: Path) -> None:
    check = RecordingTransport(LocalTransport())
    with pytest.raises(CommandFailed):
        run(check.run(c.read_only("cat", str(node / "missing"))))
    assert run(check.get(str(node / "releases" / "r1" / "compose.yml"))) == b"services: {}\n"


def test_local_transport_put_get_and_stats(tmp_path: Path) -> None:
    t = LocalTransport("local")
    path = tmp_path / "a b" / "f; x"

    async def work() -> bytes:
        await t.put(b"\x00bytes\n", str(path), mode=0o640)
        return await t.get(str(path))

    assert run(work()) == b"\x00bytes\n"
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert (t.stats.commands, t.stats.puts, t.stats.gets) == (2, 1, 1)
    assert isinstance(t, Transport) and isinstance(RecordingTransport(t), Transport)


def test_local_transport_timeout() -> None:
    with pytest.raises(TransportError, match="timed out after 0.2s"):
        run(LocalTransport().run(c.read_only("sleep", "5"), timeout=0.2))
