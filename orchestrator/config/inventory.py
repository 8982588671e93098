"""Inventory: the machines of the fleet and their facts.

`load_inventory(path)` reads `inventory/swarm.yml` (or the file given with `-i`), validates
it once and returns a frozen `Inventory` whose nodes carry their merged SSH settings and
variables (fleet vars < group vars < host vars, as Ansible users expect). Nothing outside
this module sees the raw YAML.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from orchestrator.config.models import (
    NAME_RULE,
    AbsDir,
    EnvName,
    Host,
    HttpUrl,
    IpAddress,
    Line,
    Model,
    Name,
    NonEmptyLine,
    Port,
    RelPath,
    UserName,
    is_host,
    is_ip,
    is_name,
    quoted,
)
from orchestrator.config.yamlfile import PathKey, YamlDoc, format_loc, load_yaml, validate
from orchestrator.errors import InputError

Arch = Literal["amd64", "arm64"]
_ARCH_ALIASES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _network_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", value):
        raise ValueError(f"not a docker network name (letters, digits, '_', '.', '-'), got {quoted(value)}")
    return value


def _version(value: str) -> str:
    if not re.fullmatch(r"\d{1,6}(?:\.\d{1,6}){0,3}", value):
        raise ValueError(f"expected a version like 2.20 or 535.104, got {quoted(value)} (quote it)")
    return value


def _abs_file(value: str) -> str:
    if not value.startswith("/") or ".." in value.split("/") or any(ord(c) < 32 for c in value):
        raise ValueError(f"expected an absolute path on the node, got {quoted(value)}")
    return value


Version = Annotated[str, AfterValidator(_version)]
AbsFile = Annotated[str, AfterValidator(_abs_file)]


class SshSettings(Model):
    user: UserName = "swarm"
    port: Port = 22
    key: Line | None = None
    known_hosts: Line | None = "~/.ssh/known_hosts"
    connect_timeout: float = Field(10.0, ge=0.1, le=3600)
    command_timeout: float = Field(300.0, ge=0.1, le=86400)
    # A dead link is noticed after about interval x count seconds without an answer.
    keepalive_interval: float = Field(10.0, ge=1, le=3600)
    keepalive_count: int = Field(3, ge=1, le=100)


class SshOverride(Model):
    user: UserName | None = None
    port: Port | None = None
    key: Line | None = None
    known_hosts: Line | None = None
    connect_timeout: float | None = Field(None, ge=0.1, le=3600)
    command_timeout: float | None = Field(None, ge=0.1, le=86400)
    keepalive_interval: float | None = Field(None, ge=1, le=3600)
    keepalive_count: int | None = Field(None, ge=1, le=100)


class Gpu(Model):
    model: NonEmptyLine
    vram_mib: int = Field(gt=0, le=10_000_000)
    index: int | None = Field(None, ge=0, le=1023)
    # memory other processes keep on the card (a desktop); unset = unknown, which the GPU plan
    # allows for on a GeForce card (render/vllm_memory.py)
    in_use_mib: int | None = Field(None, ge=0, le=10_000_000)


_MIRROR = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?")


def _mirror(value: str) -> str:
    match = _MIRROR.fullmatch(value)
    port = int(match.group(2)) if match and match.group(2) else 1
    if not match or not is_host(match.group(1).strip("[]")) or not 1 <= port <= 65535:
        raise ValueError(f"expected a registry like registry.tail.net:5000 (host[:port]), got {quoted(value)}")
    return value


class RegistrySettings(Model):
    mirror: Annotated[str, AfterValidator(_mirror)] | None = None
    insecure: bool = False
    username: Line | None = None
    password_env: EnvName | None = None
    # hosts of token services (the `realm` of a registry's 401) that may receive the credentials;
    # the registry's own host always may (e.g. [auth.docker.io] for Docker Hub)
    token_realms: list[Host] = []


class ModelsSettings(Model):
    """Where model weights come from when no node holds them yet (docs/models.md)."""

    hub: HttpUrl = "https://huggingface.co"     # a Hugging Face hub endpoint (the lab's stand-in)
    mirror: Line = "~/.cache/swarm/models"      # a directory on the controller: <repo>/<revision>/
    token_secret: Name = "hf_token"             # the Vault secret holding the hub token, if any
    disk_margin_gb: float = Field(10.0, ge=0, le=1_000_000)   # free disk a node keeps beyond its weights
    direct: bool = True                         # node to node over a short-lived SSH key (else via the controller)


class TlsFiles(Model):
    """A server's certificate and key, as files on its node (mounted read-only into the container)."""

    cert_file: AbsFile
    key_file: AbsFile


class VaultSettings(Model):
    addr: HttpUrl = "http://127.0.0.1:8200"
    mount: RelPath = "secret"
    path: RelPath = "ai-swarm"
    token_file: Line | None = None     # a 0600 file holding a token (else VAULT_TOKEN / AppRole)
    ca_cert: Line | None = None        # controller: the CA that signed Vault's certificate (https addr)
    client_cert: Line | None = None    # controller: a client certificate, when Vault asks for one
    client_key: Line | None = None
    tls: TlsFiles | None = None        # roles/vault: serve HTTPS with these files (addr must be https)

    @model_validator(mode="after")
    def _tls(self) -> VaultSettings:
        _check_tls("vault", self.addr, self.tls, self.client_cert, self.client_key)
        return self


class ConsulSettings(Model):
    addr: HttpUrl = "http://127.0.0.1:8500"
    token_env: EnvName = "CONSUL_HTTP_TOKEN"
    token_file: Line | None = None
    register_services: bool = True    # register every service after its phase's gate passes
    ca_cert: Line | None = None
    client_cert: Line | None = None
    client_key: Line | None = None
    tls: TlsFiles | None = None        # roles/consul: serve HTTPS with these files (addr must be https)
    acl: bool = False                  # roles/consul: ACLs on, default deny (bootstrap a token once)

    @model_validator(mode="after")
    def _tls(self) -> ConsulSettings:
        _check_tls("consul", self.addr, self.tls, self.client_cert, self.client_key)
        return self


def _check_tls(what: str, addr: str, tls: TlsFiles | None, cert: str | None, key: str | None) -> None:
    if tls is not None and not addr.startswith("https://"):
        raise ValueError(f"{what}.tls is set but {what}.addr is {addr}: use https:// so clients use TLS")
    if (cert is None) != (key is None):
        raise ValueError(f"{what}.client_cert and {what}.client_key go together")


class NetworkSettings(Model):
    name: Annotated[str, AfterValidator(_network_name)] = "aiswarm"
    subnet: str = "172.20.0.0/16"

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value)
        except ValueError:
            raise ValueError(f"not a network in CIDR form: {quoted(value)}") from None
        return value


class GroupSpec(Model):
    hosts: list[Name] = []
    vars: dict[str, Any] = {}


class NodeSpec(Model):
    address: Host
    bind_address: IpAddress | None = None   # where the reference roles publish servers (default: address, if an IP)
    arch: Arch = "amd64"
    ram_gb: float = Field(8.0, gt=0, le=1_000_000)
    cpus: float | None = Field(None, gt=0, le=100_000)     # when set, container CPU limits are capped to it
    disk_gb: float | None = Field(None, gt=0)
    gpus: list[Gpu] = []
    protected: list[Name] = []
    optional: bool = False
    thermal_limit_c: float | None = Field(None, gt=0, le=150)
    deploy_root: AbsDir | None = None
    ssh: SshOverride = SshOverride()
    vars: dict[str, Any] = {}
    services: dict[str, dict[str, Any]] = {}

    @field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, value: Any) -> Any:
        return _ARCH_ALIASES.get(value.lower(), value) if isinstance(value, str) else value


class InventoryFile(Model):
    fleet: Name = "ai-swarm"
    ssh: SshSettings = SshSettings()
    deploy_root: AbsDir = "/opt/ai-swarm"
    keep_releases: int = Field(5, ge=1, le=1000)
    registry: RegistrySettings = RegistrySettings()
    models: ModelsSettings = ModelsSettings()
    vault: VaultSettings = VaultSettings()
    consul: ConsulSettings = ConsulSettings()
    network: NetworkSettings = NetworkSettings()
    thermal_limit_c: float = Field(85.0, gt=0, le=150)
    min_driver: Version | None = None
    min_docker: Version = "20.10"
    min_compose: Version = "2.20"
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
    var_origins: dict[str, PathKey] = field(default_factory=dict, repr=False, compare=False)

    @property
    def address(self) -> str:
        return self.spec.address

    @property
    def bind_address(self) -> str:
        """Where servers of the reference roles publish their ports: `bind_address`, else the
        address when it is an IP; "" (every interface) for a node known only by name."""
        if self.spec.bind_address:
            return self.spec.bind_address
        return self.spec.address if is_ip(self.spec.address) else ""

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
    doc: YamlDoc | None = field(default=None, repr=False, compare=False)

    def where(self, loc: PathKey) -> str:
        """`file:line` of a key path in the inventory (the file alone when unknown)."""
        return self.doc.where(loc) if self.doc is not None else str(self.path)

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
    _check_nodes(spec, doc)
    nodes = {name: _resolve_node(name, spec) for name in spec.nodes}
    return Inventory(path=path, spec=spec, nodes=nodes, doc=doc)


RESERVED_NAMES = frozenset({"all", "ungrouped", "localhost"})
"""`all` is every node to --limit and to a playbook's hosts; `ungrouped` and `localhost` mean
other things to Ansible users: none of them can name a node or a group."""


def _check_names(spec: InventoryFile, doc: YamlDoc) -> None:
    for name in [*spec.nodes, *spec.groups]:
        loc = ("nodes", name) if name in spec.nodes else ("groups", name)
        if not is_name(name):
            raise InputError(f"{format_loc(loc)}: names {NAME_RULE}", file=doc.where(loc))
        if name in RESERVED_NAMES:
            raise InputError(f"{format_loc(loc)}: {name!r} is a reserved name (`all` means every node): "
                             "choose another name", file=doc.where(loc))
    clash = set(spec.nodes) & set(spec.groups)
    if clash:
        name = sorted(clash)[0]
        raise InputError(
            f"groups.{name}: a group cannot have the name of a node", file=doc.where(("groups", name))
        )
    for kind, table in (("vars", spec.vars), *((f"groups.{g}.vars", s.vars) for g, s in spec.groups.items()),
                        *((f"nodes.{n}.vars", s.vars) for n, s in spec.nodes.items())):
        _check_var_names(kind, table, doc)


def _check_var_names(where: str, table: dict[str, Any], doc: YamlDoc) -> None:
    for key in table:
        if not _VAR.fullmatch(key):
            loc = (*where.split("."), key)
            raise InputError(f"{format_loc(loc)}: variable names use letters, digits and '_', "
                             "not starting with a digit", file=doc.where(loc))


_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _check_groups(spec: InventoryFile, doc: YamlDoc) -> None:
    for group, gspec in spec.groups.items():
        for i, host in enumerate(gspec.hosts):
            if host not in spec.nodes:
                loc = ("groups", group, "hosts", i)
                raise InputError(
                    f"groups.{group}.hosts[{i}]: no node named {host!r}{did_you_mean(host, spec.nodes)}",
                    file=doc.where(loc))


def _check_gpus(spec: InventoryFile, doc: YamlDoc) -> None:
    for name, node in spec.nodes.items():
        indexes = [g.index if g.index is not None else i for i, g in enumerate(node.gpus)]
        if len(set(indexes)) != len(indexes):
            loc = ("nodes", name, "gpus")
            raise InputError(f"nodes.{name}.gpus: two GPUs share an index", file=doc.where(loc))


def _check_nodes(spec: InventoryFile, doc: YamlDoc) -> None:
    for name, node in spec.nodes.items():
        for svc, settings in node.services.items():
            loc: PathKey = ("nodes", name, "services", svc)
            if not is_name(svc):
                raise InputError(f"{format_loc(loc)}: service names {NAME_RULE}", file=doc.where(loc))
            for key in settings:
                if not isinstance(key, str) or not _VAR.fullmatch(key):
                    raise InputError(f"{format_loc((*loc, str(key)))}: setting names use letters, digits "
                                     "and '_'", file=doc.where((*loc, str(key))))


def did_you_mean(word: str, known: Any) -> str:
    """` (did you mean `x`?)` for the closest known word, else ` (known: a, b)` when few."""
    import difflib

    names = sorted(str(k) for k in known)
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.7)
    if close:
        return f" (did you mean `{close[0]}`?)"
    if names and len(names) <= 12:
        return f" (known: {', '.join(names)})"
    return ""


def _resolve_node(name: str, spec: InventoryFile) -> Node:
    node = spec.nodes[name]
    groups = tuple(g for g, gs in spec.groups.items() if name in gs.hosts)
    merged: dict[str, Any] = dict(spec.vars)
    origins: dict[str, PathKey] = {k: ("vars", k) for k in spec.vars}
    for group in groups:
        merged.update(spec.groups[group].vars)
        origins.update({k: ("groups", group, "vars", k) for k in spec.groups[group].vars})
    merged.update(node.vars)
    origins.update({k: ("nodes", name, "vars", k) for k in node.vars})
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
        var_origins=origins,
    )
