"""testinfra hosts: the generated ssh_config, host keys verified, password login detection.

A small in-process paramiko server on port 0 plays the node's sshd.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from orchestrator.conformance import hosts
from orchestrator.conformance.hosts import HostSpec
from orchestrator.errors import TransportError


class _Server(paramiko.ServerInterface):
    def __init__(self, methods: str, client_key: paramiko.PKey) -> None:
        self.methods = methods
        self.client_key = client_key

    def get_allowed_auths(self, username: str) -> str:
        return self.methods

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL if key == self.client_key else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=_answer, args=(channel, command), daemon=True).start()
        return True


def _answer(channel: paramiko.Channel, command: bytes) -> None:
    # paramiko sends the exec request's success reply after check_channel_exec_request
    # returns; answering from another thread a moment later keeps the order a real sshd has.
    time.sleep(0.05)
    channel.sendall(b"ran:" + command)
    channel.send_exit_status(0)
    channel.close()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, paramiko.PKey, Path, list[str]]]:
    """(port, host key, client key file, allowed methods — mutable) of a one-thread test sshd."""
    yield from _sshd(tmp_path, "127.0.0.1")


@pytest.fixture
def sshd_v6(tmp_path: Path) -> Iterator[tuple[int, paramiko.PKey, Path, list[str]]]:
    """The same test sshd on the IPv6 loopback."""
    yield from _sshd(tmp_path, "::1")


def _sshd(tmp_path: Path, address: str) -> Iterator[tuple[int, paramiko.PKey, Path, list[str]]]:
    host_key = paramiko.Ed25519Key.from_private_key_file(_keygen(tmp_path / "host"))
    client_file = _keygen(tmp_path / "client")
    client_key = paramiko.Ed25519Key.from_private_key_file(client_file)
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    listener.bind((address, 0))
    listener.listen(8)
    methods = ["publickey"]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            transport.start_server(server=_Server(",".join(methods), client_key))
            threading.Thread(target=_drain, args=(transport,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], host_key, Path(client_file), methods
    stop.set()
    listener.close()


def _drain(transport: paramiko.Transport) -> None:
    while transport.is_active():
        channel = transport.accept(1)
        if channel is None:
            continue


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return str(path)


def _spec(port: int, key: Path, known: Path, address: str = "127.0.0.1") -> HostSpec:
    return HostSpec(node="node1", address=address, user="swarm", port=port, key=key,
                    known_hosts=known, timeout=5)


def _known(tmp_path: Path, port: int, key: paramiko.PKey, address: str = "127.0.0.1") -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(f"[{address}]:{port} {key.get_name()} {key.get_base64()}\n")
    return path


def test_ssh_config_is_strict_and_quotes_paths(tmp_path: Path) -> None:
    spec = HostSpec("starlord", "198.18.1.2", "swarm", 22, Path("/keys/my key"), Path("/k/known"), 10)
    text = hosts.ssh_config_text([spec], tmp_path)
    assert "Host 198.18.1.2 starlord\n" in text
    assert "StrictHostKeyChecking yes" in text and "PasswordAuthentication no" in text
    assert 'IdentityFile "/keys/my key"' in text and "UserKnownHostsFile /k/known" in text
    assert f"ControlPath {tmp_path}/%C" in text
    with pytest.raises(ValueError):
        hosts.ssh_config_text([HostSpec("x", "1.2.3.4\nHost *", "u", 22, None, None, 1)])


def test_paramiko_host_runs_over_one_verified_connection(sshd, tmp_path: Path) -> None:
    port, host_key, client_key, _ = sshd
    spec = _spec(port, client_key, _known(tmp_path, port, host_key))
    host = hosts.make_host(spec, "paramiko", None, None)
    assert host.run("echo hi").stdout == "ran:echo hi"
    first = host.backend.client
    host.run("true")
    assert host.backend.client is first


def test_a_node_with_an_ipv6_address_is_reached(sshd_v6, tmp_path: Path) -> None:
    port, host_key, client_key, _ = sshd_v6
    spec = _spec(port, client_key, _known(tmp_path, port, host_key, "::1"), address="::1")
    assert spec.url == f"swarm@[::1]:{port}"
    host = hosts.make_host(spec, "paramiko", None, None)
    assert host.run("echo hi").stdout == "ran:echo hi"
    assert hosts.password_auth_offered(spec) == set()


def test_an_unknown_host_key_is_refused(sshd, tmp_path: Path) -> None:
    port, _, client_key, _ = sshd
    other = paramiko.Ed25519Key.from_private_key_file(_keygen(tmp_path / "other"))
    spec = _spec(port, client_key, _known(tmp_path, port, other))
    host = hosts.make_host(spec, "paramiko", None, None)
    with pytest.raises(TransportError, match="host key"):
        host.run("true")
    with pytest.raises(TransportError, match="host key"):
        hosts.password_auth_offered(spec)


def test_password_login_is_detected(sshd, tmp_path: Path) -> None:
    port, host_key, client_key, methods = sshd
    spec = _spec(port, client_key, _known(tmp_path, port, host_key))
    assert hosts.password_auth_offered(spec) == set()
    methods.append("password")
    assert hosts.password_auth_offered(spec) == {"password"}


def test_a_missing_known_hosts_file_is_a_transport_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "known_hosts"
    host = hosts.make_host(_spec(1, tmp_path / "key", missing), "paramiko", None, None)
    with pytest.raises(TransportError, match=f"cannot read known_hosts {missing}"):
        host.run("true")
