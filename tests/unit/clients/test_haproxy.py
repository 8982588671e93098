"""HAProxy's runtime API client against a real HAProxy (Debian's 2.6, as in the lab), over its
admin socket in a temporary directory — the way swarm reaches it on a node, minus SSH."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.clients.haproxy import RuntimeApi, RuntimeApiError, parse_stat, unix_link

CONFIG = """global
    stats socket {run}/admin.sock mode 600 level admin
    server-state-file {run}/server-state
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    load-server-state-from-file global
backend model_a
    server one 127.0.0.1:9
    server two 127.0.0.1:9
"""


class LocalLink:
    """The node's unix sockets, here: what SshTransport.exchange_unix does through SSH."""

    host = "local"

    async def exchange_unix(self, path: str, data: bytes, *, timeout: float | None = None) -> bytes:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(data)
        answer = await asyncio.wait_for(reader.read(), timeout)
        writer.close()
        return answer


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy not installed: apt-get install haproxy (scripts/setup.sh does)")
    (tmp_path / "haproxy.cfg").write_text(CONFIG.format(run=tmp_path))
    proc = subprocess.Popen(["haproxy", "-W", "-db", "-f", str(tmp_path / "haproxy.cfg")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not (tmp_path / "admin.sock").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    yield tmp_path
    proc.terminate()
    proc.wait(10)


def api(run: Path) -> RuntimeApi:
    return RuntimeApi(unix_link(LocalLink()), str(run / "admin.sock"), service="haproxy")


def test_drain_and_ready_a_server(haproxy: Path) -> None:
    async def go() -> tuple[str, str, int]:
        client = api(haproxy)
        await client.set_state("model_a", "one", "ready")
        await client.set_state("model_a", "one", "drain")
        drained = (await client.server("model_a", "one")).status
        state = await client.servers_state()
        await client.set_state("model_a", "one", "ready")
        return drained, state, (await client.server("model_a", "one")).sessions

    drained, state, sessions = asyncio.run(go())
    assert drained == "DRAIN" and sessions == 0
    row = next(line.split() for line in state.splitlines() if " one " in line)
    assert int(row[6]) & 8  # srv_admin_state: forced drain, what the server-state file keeps across a reload


def test_a_refused_command_names_it(haproxy: Path) -> None:
    with pytest.raises(RuntimeApiError, match="refused `set server model_a/three state drain`: No such server"):
        asyncio.run(api(haproxy).set_state("model_a", "three", "drain"))
    with pytest.raises(RuntimeApiError, match="has no server three in backend model_a"):
        asyncio.run(api(haproxy).server("model_a", "three"))


def test_the_worker_pid_changes_with_a_reload(haproxy: Path) -> None:
    client = api(haproxy)
    before = asyncio.run(client.worker_pid())
    master = int(subprocess.check_output(["pgrep", "-f", f"haproxy -W -db -f {haproxy}/haproxy.cfg"]).split()[0])
    subprocess.run(["kill", "-USR2", str(master)], check=True)
    deadline, resend, after = time.monotonic() + 15, time.monotonic() + 5, before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.1)
        if resend is not None and time.monotonic() > resend:
            # a master just started lets a USR2 go unheeded about once in twenty (engine/rollout.confirm_reloads)
            subprocess.run(["kill", "-USR2", str(master)], check=True)
            resend = None
        try:
            after = asyncio.run(client.worker_pid())
        except RuntimeApiError:
            continue
    assert after != before


def test_a_missing_socket_is_a_runtime_api_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeApiError, match="did not answer"):
        asyncio.run(api(tmp_path).worker_pid())


def test_names_and_commands_are_checked_before_they_go_out() -> None:
    client = RuntimeApi(unix_link(LocalLink()), "/nowhere")
    with pytest.raises(ValueError):
        asyncio.run(client.set_state("model_a", "one; shutdown", "drain"))
    with pytest.raises(ValueError):
        asyncio.run(client.set_state("model_a", "one", "up"))
    with pytest.raises(ValueError):
        asyncio.run(client.call("show info\nshutdown sessions"))
    with pytest.raises(RuntimeApiError):
        unix_link(object())


def test_stat_rows() -> None:
    rows = parse_stat("# pxname,svname,qcur,qmax,scur,smax,status\nm,FRONTEND,,,1,1,OPEN\nm,one,0,0,3,4,DRAIN\n"
                      "m,BACKEND,0,0,3,4,UP\n")
    assert [(r.backend, r.server, r.sessions, r.status) for r in rows] == [("m", "one", 3, "DRAIN")]
