"""A real OpenSSH server on 127.0.0.1 for transport tests.

`sshd_factory` starts `/usr/sbin/sshd -D` on a free loopback port with its own host
key, a temp authorized key for the current user and `LogLevel VERBOSE`, so tests can
count "Accepted publickey" lines (one per connection) in its log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.transport.ssh import SshTarget

SSHD = Path("/usr/sbin/sshd")
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")
START_DEADLINE_S = 10.0

requires_sshd = pytest.mark.skipif(
    not SSHD.exists(), reason="needs /usr/sbin/sshd (Debian openssh-server) for a real SSH server"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swarm-test", "-f", str(path)],
        check=True,
        timeout=20,
    )
    return path


@dataclass
class SshServer:
    port: int
    host_key: Path
    client_key: Path
    known_hosts: Path
    log: Path
    process: subprocess.Popen[bytes]

    def target(self, name: str = "node", **overrides: object) -> SshTarget:
        fields: dict[str, object] = {
            "name": name,
            "address": "127.0.0.1",
            "port": self.port,
            "user": current_user(),
            "key": self.client_key,
            "known_hosts": self.known_hosts,
            "connect_timeout": 10.0,
            "command_timeout": 30.0,
        }
        fields.update(overrides)
        return SshTarget(**fields)  # type: ignore[arg-type]

    def accepted(self) -> int:
        """Connections sshd authenticated so far ("Accepted publickey" log lines)."""
        return self.log.read_text(errors="replace").count("Accepted publickey")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def write_config(root: Path, port: int, host_key: Path, authorized: Path) -> Path:
    config = root / "sshd_config"
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "PermitRootLogin yes",
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "LogLevel VERBOSE",
        "MaxStartups 200:30:400",
        f"Subsystem sftp {SFTP_SERVER}",
    ]
    config.write_text("\n".join(lines) + "\n")
    return config


def wait_until_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    delay = 0.01
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    raise RuntimeError(f"sshd did not listen on {port} within {START_DEADLINE_S}s")


def start_sshd(root: Path, host_key: Path | None = None) -> SshServer:
    root.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    host_key = host_key or keygen(root / "host_ed25519")
    client_key = keygen(root / "client_ed25519")
    authorized = root / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    config = write_config(root, port, host_key, authorized)
    log = root / "sshd.log"
    log.touch()
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_listening(port, proc, log)
    known_hosts = root / "known_hosts"
    public = Path(f"{host_key}.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    return SshServer(port, host_key, client_key, known_hosts, log, proc)


@pytest.fixture
def sshd_factory(tmp_path: Path) -> Iterator[Callable[..., SshServer]]:
    started: list[SshServer] = []

    def make(name: str = "sshd", host_key: Path | None = None) -> SshServer:
        server = start_sshd(tmp_path / name, host_key)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def sshd(sshd_factory: Callable[..., SshServer]) -> SshServer:
    return sshd_factory()
