"""SshTransport against a real OpenSSH server on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator import commands as c
from orchestrator.errors import CommandFailed, TransportError
from orchestrator.transport.base import Transport
from orchestrator.transport.dial import dial_early
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.ssh import (
    SshTransport,
    fetch_host_key,
    known_keys,
    record_host_key,
    trust,
)

from .conftest import SshServer, free_port, keygen, requires_sshd

pytestmark = [requires_sshd, pytest.mark.timeout(120)]

T = TypeVar("T")

HOSTILE = ["x; rm -rf /", "a b", "it's", '"q"', "$(id)", "`id`", "ünï ✓", "l1\nl2", "", "*"]


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def with_transport(server: SshServer, work: Callable[[SshTransport], Awaitable[T]]) -> T:
    async with SshTransport(server.target()) as transport:
        return await work(transport)


def connect_error(server: SshServer, **overrides: Any) -> TransportError:
    async def attempt() -> None:
        await SshTransport(server.target(**overrides)).connect()

    with pytest.raises(TransportError) as info:
        run(attempt())
    return info.value


# --------------------------------------------------------------------------- reuse


def test_one_connection_reused_for_many_commands(sshd: SshServer) -> None:
    n = 20

    async def work(t: SshTransport) -> list[str]:
        outs = [(await t.run(c.read_only("echo", str(i)))).stdout for i in range(n)]
        assert t.stats.connections == 1 and t.stats.commands == n
        return outs

    before = sshd.accepted()
    outs = run(with_transport(sshd, work))
    assert outs == [f"{i}\n" for i in range(n)]
    assert sshd.accepted() - before == 1


def test_concurrent_runs_share_the_connection(sshd: SshServer) -> None:
    async def work(t: SshTransport) -> list[str]:
        results = await asyncio.gather(*(t.run(c.read_only("echo", str(i))) for i in range(20)))
        assert t.stats.connections == 1
        return [r.stdout for r in results]

    assert run(with_transport(sshd, work)) == [f"{i}\n" for i in range(20)]
    assert sshd.accepted() == 1


def test_script_is_one_command_and_names_failing_step(sshd: SshServer) -> None:
    script = c.Script.of(
        c.read_only("echo", "first"),
        c.read_only("sh", "-c", "echo 'disk full' >&2; exit 4"),
        c.read_only("echo", "never"),
    )

    async def work(t: SshTransport) -> None:
        with pytest.raises(CommandFailed) as info:
            await t.run(script)
        assert t.stats.commands == 1
        err = info.value
        assert err.exit_status == 4 and "disk full" in err.stderr
        assert "exit 4" in err.command and "first" not in err.command
        result = await t.run(script, check=False)
        assert [s.exit_status for s in result.steps] == [0, 4, None]
        assert result.stdout == "first\n"

    run(with_transport(sshd, work))


def test_a_command_reading_stdin_ends_when_there_is_nothing_to_read(sshd: SshServer, tmp_path) -> None:
    """Writing an empty file (an empty record) must not wait for stdin until the timeout."""
    target = tmp_path / "empty.txt"

    async def work(t: SshTransport) -> None:
        await t.run(c.write_file(str(target), 0o644), input=b"", timeout=10)
        await t.run(c.read_only("cat"), timeout=10)

    run(with_transport(sshd, work))
    assert target.read_bytes() == b""


# --------------------------------------------------------------------------- data


BODY = b"KEY=v\xc3\xa9rit\xc3\xa9 \xf0\x9f\x94\x91\r\n\x00\xff binary\nno trailing newline"


def test_put_0600_exact_bytes_and_get(sshd: SshServer, tmp_path: Path) -> None:
    path = tmp_path / "release dir; $(x)" / "env" / "vllm.env"

    async def work(t: SshTransport) -> bytes:
        await t.put(BODY, str(path), mode=0o600)
        remote_mode = (await t.run(c.read_only("stat", "-c", "%a", str(path)))).stdout
        assert remote_mode == "600\n"
        return await t.get(str(path))

    assert run(with_transport(sshd, work)) == BODY
    assert path.read_bytes() == BODY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["vllm.env"]


def test_put_large_binary(sshd: SshServer, tmp_path: Path) -> None:
    body = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "big.bin"

    async def work(t: SshTransport) -> bytes:
        await t.put(body, str(path), mode=0o644)
        return await t.get(str(path))

    got = run(with_transport(sshd, work))
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_run_with_input_bytes(sshd: SshServer) -> None:
    async def work(t: SshTransport) -> str:
        return (await t.run(c.read_only("sha256sum"), input=BODY)).stdout

    assert run(with_transport(sshd, work)).split()[0] == hashlib.sha256(BODY).hexdigest()


def test_hostile_argv_arrives_intact_over_ssh(sshd: SshServer) -> None:
    async def work(t: SshTransport) -> str:
        return (await t.run(c.read_only("printf", "%s\\0", *HOSTILE))).stdout

    assert run(with_transport(sshd, work)).split("\0")[:-1] == HOSTILE


# --------------------------------------------------------------------------- failures


def test_command_failure_carries_exit_status_and_stderr_tail(sshd: SshServer) -> None:
    noisy = "for i in 1 2 3 4 5 6 7 8; do echo line$i >&2; done; exit 3"

    async def work(t: SshTransport) -> CommandFailed:
        with pytest.raises(CommandFailed) as info:
            await t.run(c.read_only("sh", "-c", noisy))
        result = await t.run(c.read_only("sh", "-c", noisy), check=False)
        assert result.exit_status == 3 and "line8" in result.stderr
        return info.value

    err = run(with_transport(sshd, work))
    assert err.exit_status == 3 and err.host == "node"
    assert "line8" in str(err) and "line1\n" not in str(err)  # the tail, not the whole
    assert "exit 3" in err.command


def test_get_missing_file_fails_clearly(sshd: SshServer, tmp_path: Path) -> None:
    async def work(t: SshTransport) -> bytes:
        return await t.get(str(tmp_path / "nope"))

    with pytest.raises(CommandFailed) as info:
        run(with_transport(sshd, work))
    assert "No such file" in str(info.value)


def test_command_timeout_is_clear_and_connection_survives(sshd: SshServer) -> None:
    async def work(t: SshTransport) -> str:
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            await t.run(c.read_only("sleep", "30"), timeout=0.5)
        assert time.monotonic() - started < 10
        assert "timed out after 0.5s" in str(info.value)
        return (await t.run(c.read_only("echo", "still here"))).stdout

    assert run(with_transport(sshd, work)) == "still here\n"


def test_script_timeout_names_commands_not_framing(sshd: SshServer) -> None:
    script = c.Script.of(c.read_only("echo", "a"), c.read_only("sleep", "30"))

    async def work(t: SshTransport) -> None:
        await t.run(script, timeout=0.5)

    with pytest.raises(TransportError) as info:
        run(with_transport(sshd, work))
    assert "timed out after 0.5s: echo a && sleep 30" in str(info.value)
    assert script.nonce not in str(info.value)


def test_batch_of_facts_costs_one_command(sshd: SshServer, tmp_path: Path) -> None:
    facts = c.Script.of(
        c.uname_m(),
        c.read_link(str(tmp_path / "current")),
        c.read_file(str(tmp_path / "releases" / "x" / ".hash")),
        c.df(str(tmp_path)),
        stop_on_error=False,
    )

    async def work(t: SshTransport) -> None:
        result = await t.run(facts)
        assert t.stats.connections == 1 and t.stats.commands == 1
        arch, link, hashed, df = (s.stdout for s in result.steps)
        assert arch.strip() in {"x86_64", "aarch64"} and link == ""
        assert c.parse_read_file(hashed) is None and c.parse_df(df).total_kib > 0

    run(with_transport(sshd, work))


def test_unknown_host_key_refused_with_trust_hint(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    err = connect_error(sshd, known_hosts=empty)
    assert "not in known_hosts" in str(err) and "swarm trust node" in str(err)
    assert sshd.accepted() == 0


def test_changed_host_key_refused(sshd: SshServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key")
    public = Path(f"{other}.pub").read_text().split()
    stale = tmp_path / "stale_known_hosts"
    stale.write_text(f"[127.0.0.1]:{sshd.port} {public[0]} {public[1]}\n")
    err = connect_error(sshd, known_hosts=stale)
    assert "changed" in str(err) and "MITM" in str(err) and "remove the old entry" in str(err)
    assert sshd.accepted() == 0


def test_wrong_key_is_an_auth_error(sshd: SshServer, tmp_path: Path) -> None:
    wrong = keygen(tmp_path / "wrong_key")
    err = connect_error(sshd, key=wrong)
    assert f"key {wrong} rejected for user" in str(err)


def test_missing_key_file(sshd: SshServer, tmp_path: Path) -> None:
    err = connect_error(sshd, key=tmp_path / "no_such_key")
    assert "no_such_key not found" in str(err)


def test_refused_port_is_unreachable(sshd: SshServer) -> None:
    port = free_port()
    err = connect_error(sshd, port=port)
    assert f"cannot reach 127.0.0.1:{port}" in str(err) and "is it up" in str(err)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP but never speaks SSH: the handshake hangs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_connect_timeout_is_unreachable(sshd: SshServer, silent_listener: int) -> None:
    started = time.monotonic()
    err = connect_error(sshd, port=silent_listener, connect_timeout=0.5)
    assert time.monotonic() - started < 5
    assert f"cannot reach 127.0.0.1:{silent_listener} (timed out after 0.5s)" in str(err)


@pytest.fixture
def unanswering_port() -> Iterator[int]:
    """A port whose SYNs go unanswered, like an address with nothing behind it: a listener
    whose accept queue is full drops new connection attempts."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filled = []
        for _ in range(2):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            filled.append(c)
        time.sleep(0.05)
        try:
            yield port
        finally:
            for c in filled:
                c.close()


def test_an_optional_node_that_does_not_answer_within_its_window_is_off(sshd: SshServer,
                                                                      unanswering_port: int) -> None:
    err = connect_error(sshd, port=unanswering_port, answer_window=0.3, connect_timeout=30)
    assert "no answer within 0.3s: an optional node that is off" in str(err)


def test_an_optional_node_that_answers_connects_as_any_other(sshd: SshServer) -> None:
    async def go() -> str:
        async with SshTransport(sshd.target(answer_window=0.5)) as t:
            return (await t.run(c.read_only("echo", "up"))).stdout

    assert asyncio.run(go()).strip() == "up"


def test_an_early_dial_is_used_for_the_handshake_and_only_once(sshd: SshServer) -> None:
    """A deploy dials its optional nodes before asyncssh loads (engine/deploy.py): the
    transport goes on over that socket; a reconnect dials anew."""
    early = dial_early("127.0.0.1", sshd.port)
    assert early is not None
    target = sshd.target(answer_window=0.5, early=early)
    assert "early" not in target.as_record()

    async def go() -> list[str]:
        t = SshTransport(target)
        out = [(await t.run(c.read_only("echo", "first"))).stdout]
        await t.close()
        assert t.target.early is None and early.sock.fileno() == -1  # handed over, then closed
        out.append((await t.run(c.read_only("echo", "again"))).stdout)
        await t.close()
        return out

    before = sshd.accepted()
    assert [x.strip() for x in asyncio.run(go())] == ["first", "again"]
    assert sshd.accepted() - before == 2


def test_an_optional_nodes_window_counts_from_its_dial(sshd: SshServer, unanswering_port: int) -> None:
    """The window runs while the run loads: a node that gave no answer in the window since
    its SYN is off at once, with no second window after the imports."""
    early = dial_early("127.0.0.1", unanswering_port)
    assert early is not None
    time.sleep(1.05)                     # what a deploy spends loading asyncssh meanwhile (a slow machine's)
    started = time.monotonic()
    err = connect_error(sshd, port=unanswering_port, answer_window=1.0, connect_timeout=30, early=early)
    assert "no answer within 1s: an optional node that is off" in str(err)
    assert time.monotonic() - started < 1.0  # no second window: one would take 1 s or more


def test_a_refused_early_dial_is_unreachable(sshd: SshServer) -> None:
    with socket.socket() as bound:       # bound, never listening: the kernel refuses
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        early = dial_early("127.0.0.1", port)
        err = connect_error(sshd, port=port, answer_window=0.3, early=early)
    assert f"cannot reach 127.0.0.1:{port} (connection refused)" in str(err)


def test_a_name_is_not_dialled_early() -> None:
    assert dial_early("starlord.tailnet.example", 22) is None   # resolved in the loop, as before
    early = dial_early("127.0.0.1", free_port())
    assert early is not None
    early.close()


# --------------------------------------------------------------------------- trust


def ssh_keygen_fingerprint(pub: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True, timeout=10
    )
    return out.stdout.split()[1]


def test_trust_records_fingerprint_then_connect_works(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "fresh" / "known_hosts"
    fetched = run(fetch_host_key("127.0.0.1", sshd.port))
    assert fetched.fingerprint == ssh_keygen_fingerprint(Path(f"{sshd.host_key}.pub"))
    assert not known.exists()  # fetching alone records nothing
    recorded = run(trust("127.0.0.1", sshd.port, known))
    assert recorded.fingerprint == fetched.fingerprint
    assert known.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    assert record_host_key(fetched, known) is False  # already there: no duplicate
    assert len(known_keys(known, "127.0.0.1", sshd.port)) == 1
    assert len(known.read_text().splitlines()) == 1

    async def work(t: SshTransport) -> str:
        return (await t.run(c.uname_m())).stdout

    assert run(SshTransport(sshd.target(known_hosts=known)).run(c.uname_m())).stdout
    assert run(with_transport(sshd, work))


def test_trust_refuses_to_add_a_second_key(sshd_factory: Callable[..., SshServer]) -> None:
    first = sshd_factory("a")
    second = sshd_factory("b")  # different host key
    key = run(fetch_host_key("127.0.0.1", second.port))
    lying = type(key)("127.0.0.1", first.port, key.key)
    with pytest.raises(TransportError, match="already holds a different key"):
        record_host_key(lying, first.known_hosts)


def test_changed_server_key_after_restart(sshd_factory: Callable[..., SshServer]) -> None:
    server = sshd_factory("a")
    saved_known = server.known_hosts.read_text()
    server.stop()
    replacement = sshd_factory("b")  # fresh host key
    server.known_hosts.write_text(saved_known.replace(str(server.port), str(replacement.port)))
    err = connect_error(replacement, known_hosts=server.known_hosts)
    assert "changed! possible MITM" in str(err)


# --------------------------------------------------------------------------- fleet


def test_thirty_hosts_with_eight_forks(sshd: SshServer) -> None:
    fleet = Fleet.over_ssh([sshd.target(f"n{i:02d}") for i in range(30)], forks=8)

    async def work() -> None:
        connected = await fleet.connect()
        assert connected.ok, connected.failed
        results = await fleet.run(c.read_only("echo", "hello"))
        assert results.ok and len(results) == 30
        assert {r.stdout for r in results.succeeded.values()} == {"hello\n"}
        assert all(s.connections == 1 and s.commands == 1 for s in fleet.stats().values())
        total = fleet.total_stats()
        assert (total.connections, total.commands) == (30, 30)
        await fleet.close()

    run(work())
    assert sshd.accepted() == 30


def test_fleet_reports_per_host_errors(sshd: SshServer) -> None:
    dead = sshd.target("dead", port=free_port())
    fleet = Fleet.over_ssh([sshd.target("ok1"), dead, sshd.target("ok2")], forks=2)

    async def work() -> None:
        results = await fleet.run(c.read_only("echo", "x"))
        await fleet.close()
        assert set(results.succeeded) == {"ok1", "ok2"}
        assert isinstance(results.failed["dead"], TransportError)
        assert "cannot reach" in str(results["dead"])

    run(work())


class _Probe:
    """A fake transport that records how many hosts run at the same time."""

    active = 0
    peak = 0

    def __init__(self, host: str) -> None:
        self.host = host

    async def slow(self) -> str:
        _Probe.active += 1
        _Probe.peak = max(_Probe.peak, _Probe.active)
        await asyncio.sleep(0.01)
        _Probe.active -= 1
        return self.host


def test_fleet_bounds_concurrency_to_forks() -> None:
    _Probe.active = _Probe.peak = 0
    probes = [_Probe(f"h{i}") for i in range(30)]
    fleet = Fleet(probes, forks=8)  # type: ignore[arg-type]

    async def one(t: Transport) -> str:
        return await t.slow()  # type: ignore[attr-defined, no-any-return]

    results = run(fleet.map(one))
    assert _Probe.peak == 8
    assert results.succeeded == {p.host: p.host for p in probes}
