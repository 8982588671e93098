"""Inventory: the machines of the fleet and their facts.

`load_inventory(path)` reads `inventory/swarm.yml` (or the file given with `-i`), validates
it once and returns a frozen `Inventory` whose nodes carry their merged SSH settings and
variables (fleet vars < group vars < host vars, as Ansible users expect). Nothing outside
this module sees the raw YAML.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from orchestrator.config.models import NAME_RE, Model
from orchestrator.config.yamlfile import YamlDoc, load_yaml, validate
from orchestrator.errors import InputError

Arch = Literal["amd64", "arm64"]
_ARCH_ALIASES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class SshSettings(Model):
    user: str = "swarm"
    port: int = Field(22, ge=1, le=65535)
    key: str | None = None
    known_hosts: str | None = "~/.ssh/known_hosts"
    connect_timeout: float = Field(10.0, gt=0)
    command_timeout: float = Field(300.0, gt=0)
    # A dead link is noticed after about interval x count seconds without an answer.
    keepalive_interval: float = Field(10.0, gt=0, le=3600)
    keepalive_count: int = Field(3, ge=1, le=100)


class SshOverride(Model):
    user: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    key: str | None = None
    known_hosts: str | None = None
    connect_timeout: float | None = Field(None, gt=0)
    command_timeout: float | None = Field(None, gt=0)
    keepalive_interval: float | None = Field(None, gt=0, le=3600)
    keepalive_count: int | None = Field(None, ge=1, le=100)


class Gpu(Model):
    model: str
    vram_mib: int = Field(gt=0)
    index: int | None = Field(None, ge=0)


class RegistrySettings(Model):
    mirror: str | None = None
    insecure: bool = False
    username: str | None = None
    password_env: str | None = None


class VaultSettings(Model):
    addr: str = "http://127.0.0.1:8200"
    mount: str = "secret"
    path: str = "ai-swarm"
    token_file: str | None = None     # a 0600 file holding a token (else VAULT_TOKEN / AppRole)


class ConsulSettings(Model):
    addr: str = "http://127.0.0.1:8500"
    token_env: str = "CONSUL_HTTP_TOKEN"
    token_file: str | None = None
    register_services: bool = True    # register every service after its phase's gate passes


class NetworkSettings(Model):
    name: str = "aiswarm"
    subnet: str = "172.20.0.0/16"

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value)
        except ValueError:
            raise ValueError(f"not a network in CIDR form: {value!r}") from None
        return value


class GroupSpec(Model):
    hosts: list[str] = []
    vars: dict[str, Any] = {}


class NodeSpec(Model):
    address: str
    arch: Arch = "amd64"
    ram_gb: float = Field(8.0, gt=0)
    cpus: float | None = Field(None, gt=0)     # when set, container CPU limits are capped to it
    disk_gb: float | None = Field(None, gt=0)
    gpus: list[Gpu] = []
    protected: list[str] = []
    optional: bool = False
    thermal_limit_c: float | None = Field(None, gt=0)
    deploy_root: str | None = None
    ssh: SshOverride = SshOverride()
    vars: dict[str, Any] = {}
    services: dict[str, dict[str, Any]] = {}

    @field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, value: Any) -> Any:
        return _ARCH_ALIASES.get(str(value).lower(), value) if isinstance(value, str) else value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value):
            raise ValueError(f"not a host address: {value!r}")
        return value


class InventoryFile(Model):
    fleet: str = "ai-swarm"
    ssh: SshSettings = SshSettings()
    deploy_root: str = "/opt/ai-swarm"
    keep_releases: int = Field(5, ge=1)
    registry: RegistrySettings = RegistrySettings()
    vault: VaultSettings = VaultSettings()
    consul: ConsulSettings = ConsulSettings()
    network: NetworkSettings = NetworkSettings()
    thermal_limit_c: float = Field(85.0, gt=0)
    min_driver: str | None = None
    min_docker: str = "20.10"
    min_compose: str = "2.20"
    vars: dict[str, Any] = {}
    groups: dict[str, GroupSpec] = {}
    nodes: dict[str, NodeSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Node:
    """One machine with everything resolved: SSH settings, groups, merged vars."""

    name: str
    spec: NodeSpec
    ssh: SshSettings
    groups: tuple[str, ...]
    vars: dict[str, Any]
    deploy_root: str
    thermal_limit_c: float

    @property
    def address(self) -> str:
        return self.spec.address

    @property
    def arch(self) -> Arch:
        return self.spec.arch

    @property
    def platform(self) -> str:
        return f"linux/{self.spec.arch}"

    @property
    def gpus(self) -> list[Gpu]:
        return self.spec.gpus

    @property
    def project(self) -> str:
        """The compose project name, fixed per node."""
        return f"swarm-{self.name}"

    def is_protected(self, service: str) -> bool:
        return service in self.spec.protected

    def service_vars(self, service: str) -> dict[str, Any]:
        return dict(self.spec.services.get(service, {}))


@dataclass(frozen=True)
class Inventory:
    path: Path
    spec: InventoryFile
    nodes: dict[str, Node]

    @property
    def fleet(self) -> str:
        return self.spec.fleet

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(sorted(self.nodes))
            raise InputError(f"unknown node {name!r} (known: {known})") from None

    def select(self, pattern: str | None) -> list[Node]:
        """Nodes matching an Ansible-style --limit: names or groups, comma separated."""
        if not pattern:
            return list(self.nodes.values())
        chosen: dict[str, Node] = {}
        for word in (w.strip() for w in pattern.split(",")):
            if not word:
                continue
            if word in self.nodes:
                chosen[word] = self.nodes[word]
            elif word in self.spec.groups or word == "all":
                for node in self.group_members(word):
                    chosen[node.name] = node
            else:
                known = ", ".join(sorted([*self.nodes, *self.spec.groups]))
                raise InputError(f"--limit: no node or group named {word!r} (known: {known})")
        return [n for n in self.nodes.values() if n.name in chosen]

    def group_members(self, group: str) -> list[Node]:
        if group == "all":
            return list(self.nodes.values())
        return [n for n in self.nodes.values() if group in n.groups]

    def resolve_path(self, value: str | None) -> Path | None:
        """Paths in the inventory are relative to its own directory; ~ expands."""
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.path.parent / path)


def load_inventory(path: Path) -> Inventory:
    doc = load_yaml(path, what="inventory")
    spec = validate(InventoryFile, doc, "inventory")
    _check_names(spec, doc)
    _check_groups(spec, doc)
    _check_gpus(spec, doc)
    nodes = {name: _resolve_node(name, spec) for name in spec.nodes}
    return Inventory(path=path, spec=spec, nodes=nodes)


def _check_names(spec: InventoryFile, doc: YamlDoc) -> None:
    import re

    for name in [*spec.nodes, *spec.groups]:
        if not re.match(NAME_RE, name):
            loc = ("nodes", name) if name in spec.nodes else ("groups", name)
            raise InputError(
                f"{'.'.join(loc)}: names use lowercase letters, digits, '-' and '_'",
                file=doc.where(loc),
            )
    clash = set(spec.nodes) & set(spec.groups)
    if clash:
        name = sorted(clash)[0]
        raise InputError(
            f"groups.{name}: a group cannot have the name of a node", file=doc.where(("groups", name))
        )


def _check_groups(spec: InventoryFile, doc: YamlDoc) -> None:
    for group, gspec in spec.groups.items():
        for i, host in enumerate(gspec.hosts):
            if host not in spec.nodes:
                loc = ("groups", group, "hosts", i)
                raise InputError(
                    f"groups.{group}.hosts[{i}]: no node named {host!r}", file=doc.where(loc)
                )


def _check_gpus(spec: InventoryFile, doc: YamlDoc) -> None:
    for name, node in spec.nodes.items():
        indexes = [g.index if g.index is not None else i for i, g in enumerate(node.gpus)]
        if len(set(indexes)) != len(indexes):
            loc = ("nodes", name, "gpus")
            raise InputError(f"nodes.{name}.gpus: two GPUs share an index", file=doc.where(loc))


def _resolve_node(name: str, spec: InventoryFile) -> Node:
    node = spec.nodes[name]
    groups = tuple(g for g, gs in spec.groups.items() if name in gs.hosts)
    merged: dict[str, Any] = dict(spec.vars)
    for group in groups:
        merged.update(spec.groups[group].vars)
    merged.update(node.vars)
    overrides = {k: v for k, v in node.ssh.model_dump().items() if v is not None}
    ssh = spec.ssh.model_copy(update=overrides)
    return Node(
        name=name,
        spec=node,
        ssh=ssh,
        groups=groups,
        vars=merged,
        deploy_root=node.deploy_root or spec.deploy_root,
        thermal_limit_c=node.thermal_limit_c or spec.thermal_limit_c,
    )
