"""testinfra hosts for the fleet: one per node, host keys verified, one connection reused.

`ssh_config_text` writes an OpenSSH client config with one `Host` block per node (address,
user, port, identity, known_hosts, strict host key checking, a control socket so the
`ssh` backend also reuses one connection). The paramiko backend testinfra ships accepts
unknown host keys with a warning and never reads known_hosts; `VerifiedParamikoBackend`
loads the node's known_hosts and rejects any key not in it. `password_auth_offered`
asks a node's sshd, on a separate unauthenticated connection, which login methods it
offers: the only way to see from outside that it refuses passwords.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import testinfra.host
from testinfra.backend.paramiko import ParamikoBackend

from orchestrator.addresses import host_port
from orchestrator.config.inventory import Inventory, Node
from orchestrator.errors import TransportError

PASSWORD_METHODS = frozenset({"password", "keyboard-interactive"})


@dataclass(frozen=True)
class HostSpec:
    """How to reach one node over SSH (the inventory's ssh block, resolved)."""

    node: str
    address: str
    user: str
    port: int
    key: Path | None
    known_hosts: Path | None
    timeout: float

    @property
    def url(self) -> str:
        return f"{self.user}@{host_port(self.address, self.port)}"


def host_spec(inventory: Inventory, node: Node) -> HostSpec:
    return HostSpec(node=node.name, address=node.address, user=node.ssh.user, port=node.ssh.port,
                    key=inventory.resolve_path(node.ssh.key),
                    known_hosts=inventory.resolve_path(node.ssh.known_hosts),
                    timeout=node.ssh.connect_timeout)


def _config_value(value: str) -> str:
    if any(c in value for c in "\n\r\0\""):
        raise ValueError(f"cannot write {value!r} into an ssh_config")
    return f'"{value}"' if any(c.isspace() for c in value) else value


def ssh_config_text(specs: list[HostSpec], control_dir: Path | None = None) -> str:
    """An OpenSSH client config: one strict `Host` block per node, matched by address or name."""
    blocks = []
    for spec in specs:
        lines = [f"Host {_config_value(spec.address)} {_config_value(spec.node)}",
                 f"  HostName {_config_value(spec.address)}",
                 f"  User {_config_value(spec.user)}",
                 f"  Port {spec.port}",
                 "  BatchMode yes",
                 "  PasswordAuthentication no",
                 "  KbdInteractiveAuthentication no",
                 "  StrictHostKeyChecking yes",
                 f"  ConnectTimeout {int(spec.timeout)}"]
        if spec.key is not None:
            lines += [f"  IdentityFile {_config_value(str(spec.key))}", "  IdentitiesOnly yes"]
        if spec.known_hosts is not None:
            lines.append(f"  UserKnownHostsFile {_config_value(str(spec.known_hosts))}")
        if control_dir is not None:
            lines += ["  ControlMaster auto", f"  ControlPath {_config_value(str(control_dir))}/%C",
                      "  ControlPersist 60s"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


class VerifiedParamikoBackend(ParamikoBackend):  # type: ignore[misc]
    """testinfra's paramiko backend, with host keys checked against known_hosts (never trusted blindly)."""

    NAME = "paramiko"

    def __init__(self, hostspec: str, known_hosts: str | None = None, **kwargs: Any) -> None:
        self.known_hosts = known_hosts
        super().__init__(hostspec, **kwargs)

    @functools.cached_property
    def client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        cfg: dict[str, Any] = {"hostname": self.host.name,
                               "port": int(self.host.port) if self.host.port else 22,
                               "username": self.host.user, "timeout": self.timeout,
                               "allow_agent": False, "look_for_keys": False}
        known = self.known_hosts
        if self.ssh_config:
            known = known or _known_hosts_from_config(self.ssh_config, self.host.name)
            with open(self.ssh_config) as f:
                parsed = paramiko.SSHConfig()
                parsed.parse(f)
            self._load_ssh_config(client, cfg, parsed, os.path.dirname(self.ssh_config))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())  # whatever the config said
        try:
            if known:
                client.load_host_keys(os.path.expanduser(known))
            else:
                client.load_system_host_keys()
        except (OSError, ValueError) as exc:  # verify checks the file first: this is a race or a bad config
            raise TransportError(self.host.name, f"cannot read known_hosts {known}: {exc}",
                                 hint="`swarm trust HOST` records the host key") from None
        if self.ssh_identity_file:
            cfg["key_filename"] = self.ssh_identity_file
        try:
            client.connect(**cfg)
        except paramiko.SSHException as exc:
            raise TransportError(self.host.name, f"ssh: {exc}",
                                 hint="check the host key in known_hosts (`swarm trust HOST`)") from None
        except OSError as exc:
            raise TransportError(self.host.name, f"cannot connect: {exc}") from None
        return client


def _known_hosts_from_config(path: str, host: str) -> str | None:
    with open(path) as f:
        parsed = paramiko.SSHConfig()
        parsed.parse(f)
    value = parsed.lookup(host).get("userknownhostsfile")
    return str(value).split()[0] if value else None


def make_host(spec: HostSpec, connection: str, ssh_config: Path | None,
              identity: Path | None, **extra: Any) -> testinfra.host.Host:
    """One testinfra host for a node; the caller keeps it for the whole session."""
    ident = identity or spec.key
    kwargs: dict[str, Any] = {"ssh_config": str(ssh_config) if ssh_config else None,
                              "ssh_identity_file": str(ident) if ident else None,
                              "timeout": int(spec.timeout), **extra}
    hostspec = spec.url  # testinfra reads `user@[v6]:port` (brackets) and `user@v4:port`
    if connection == "paramiko":
        backend = VerifiedParamikoBackend(
            hostspec, known_hosts=str(spec.known_hosts) if spec.known_hosts else None, **kwargs)
        host = testinfra.host.Host(backend)
        backend.set_host(host)
        return host
    return testinfra.host.get_host(f"{connection}://{hostspec}", **kwargs)


def password_auth_offered(spec: HostSpec) -> set[str]:
    """The password-like login methods the node's sshd offers (empty: it refuses passwords).

    Opens its own short connection (the host key is checked here too), asks for the
    `none` method, and reads the methods the server lists in its refusal.
    """
    sock = socket.create_connection((spec.address, spec.port), timeout=spec.timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=spec.timeout)
        _require_known_key(spec, transport.get_remote_server_key())
        try:
            transport.auth_none(spec.user)
        except paramiko.BadAuthenticationType as exc:
            return set(exc.allowed_types) & PASSWORD_METHODS
        return {"none"}  # logged in without any credential at all
    finally:
        transport.close()


def _require_known_key(spec: HostSpec, key: paramiko.PKey) -> None:
    keys = paramiko.HostKeys()
    if spec.known_hosts is not None and spec.known_hosts.exists():
        keys.load(str(spec.known_hosts))
    name = spec.address if spec.port == 22 else f"[{spec.address}]:{spec.port}"
    known = keys.lookup(name)
    if known is None or known.get(key.get_name()) != key:
        raise TransportError(spec.node, f"host key of {spec.address} is not the one in {spec.known_hosts}",
                             hint="check it out of band, then `swarm trust HOST`")
