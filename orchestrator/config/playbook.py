"""Playbook: what runs where, phase by phase.

Phases follow the reference plan: 0 validation (preflight only), 1 infrastructure
(docker network and directories on every node), then service phases that each bring a
set of service instances (a role + vars, on one node) up behind a health gate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from orchestrator.config.inventory import Inventory, did_you_mean
from orchestrator.config.models import Duration, Model, Name, NonEmptyLine, RelPath, quoted
from orchestrator.config.yamlfile import PathKey, YamlDoc, format_loc, load_yaml, validate
from orchestrator.errors import InputError

_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _secret_key(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", value):
        raise ValueError(f"a Vault key uses letters, digits, '_', '.' and '-', got {quoted(value)}")
    return value


MIN_POLL_S = 0.01  # a gate probes, then sleeps this long: 1ns would be a busy loop


class GateSpec(Model):
    """Nomad-style update knobs: every probe must pass and stay passing."""

    healthy_deadline: Duration = 300.0
    min_healthy_time: Duration = 10.0
    poll_interval: Duration = 2.0

    @model_validator(mode="after")
    def _order(self) -> GateSpec:
        if self.min_healthy_time > self.healthy_deadline:
            raise ValueError(f"min_healthy_time ({self.min_healthy_time:g}s) is longer than healthy_deadline "
                             f"({self.healthy_deadline:g}s): the gate could never pass")
        if not MIN_POLL_S <= self.poll_interval <= max(self.healthy_deadline, MIN_POLL_S):
            raise ValueError(f"poll_interval must be at least {MIN_POLL_S:g}s and at most healthy_deadline, "
                             f"got {self.poll_interval:g}s")
        return self


class ServiceInstance(Model):
    name: Name
    role: Name
    host: Name
    vars: dict[str, Any] = {}
    depends_on: list[Name] = []


class InfrastructureSpec(Model):
    network: bool = True
    directories: list[RelPath] = ["releases", "data", "backups"]


class PhaseSpec(Model):
    id: int = Field(ge=0, le=999)
    name: NonEmptyLine
    description: str = ""
    kind: Literal["preflight", "infrastructure", "services"] = "services"
    hosts: list[Name] | Literal["all"] = []
    optional: bool = False
    services: list[ServiceInstance] = []
    infrastructure: InfrastructureSpec = InfrastructureSpec()
    gate: GateSpec = GateSpec()
    on_failure: Literal["rollback", "stop"] = "rollback"


class SecretSpec(Model):
    path: RelPath
    key: Annotated[str, AfterValidator(_secret_key)]
    description: str = ""


class PlaybookFile(Model):
    name: NonEmptyLine
    description: str = ""
    secrets: dict[str, SecretSpec] = {}
    phases: list[PhaseSpec] = Field(min_length=1, max_length=1000)


@dataclass(frozen=True)
class Phase:
    spec: PhaseSpec
    hosts: tuple[str, ...]

    @property
    def id(self) -> int:
        return self.spec.id

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def services(self) -> list[ServiceInstance]:
        return self.spec.services

    def services_on(self, host: str) -> list[ServiceInstance]:
        return [s for s in self.spec.services if s.host == host]


@dataclass(frozen=True)
class Playbook:
    path: Path
    spec: PlaybookFile
    phases: tuple[Phase, ...]
    doc: YamlDoc | None = field(default=None, repr=False, compare=False)

    def where(self, loc: PathKey) -> str:
        """`file:line` of a key path in the playbook (the file alone when unknown)."""
        return self.doc.where(loc) if self.doc is not None else str(self.path)

    def loc_of(self, service: str) -> PathKey:
        """The key path of a service instance: ("phases", i, "services", j)."""
        for i, phase in enumerate(self.spec.phases):
            for j, svc in enumerate(phase.services):
                if svc.name == service:
                    return ("phases", i, "services", j)
        return ()

    def phase(self, phase_id: int) -> Phase:
        for phase in self.phases:
            if phase.id == phase_id:
                return phase
        known = ", ".join(str(p.id) for p in self.phases)
        raise InputError(f"no phase {phase_id} in {self.path} (phases: {known})")

    def all_services(self) -> list[tuple[Phase, ServiceInstance]]:
        return [(p, s) for p in self.phases for s in p.services]

    def service(self, name: str) -> tuple[Phase, ServiceInstance]:
        for phase, svc in self.all_services():
            if svc.name == name:
                return phase, svc
        raise InputError(f"no service named {name!r} in {self.path}")

    def role_names(self) -> set[str]:
        return {s.role for _, s in self.all_services()}

    def phases_of(self, host: str) -> list[Phase]:
        return [p for p in self.phases if host in p.hosts]


def load_playbook(path: Path, inventory: Inventory) -> Playbook:
    doc = load_yaml(path, what="playbook")
    spec = validate(PlaybookFile, doc, "playbook")
    _check_ids(spec, doc)
    _check_secret_names(spec, doc)
    phases = tuple(_resolve_phase(i, p, inventory, doc) for i, p in enumerate(spec.phases))
    _check_services(spec, inventory, doc)
    _check_cycles(spec, doc)
    _check_inventory_refs(spec, inventory)
    return Playbook(path=path, spec=spec, phases=phases, doc=doc)


def _check_secret_names(spec: PlaybookFile, doc: YamlDoc) -> None:
    for name in spec.secrets:
        if not _SECRET_NAME.fullmatch(name):
            raise InputError(f"secrets.{name[:64]}: secret names use letters, digits and '_' (they are "
                             "written as secrets.<name> in templates)", file=doc.where(("secrets", name)))


def _check_ids(spec: PlaybookFile, doc: YamlDoc) -> None:
    seen: set[int] = set()
    for i, phase in enumerate(spec.phases):
        if phase.id in seen:
            raise InputError(f"phases[{i}].id: phase {phase.id} is defined twice", file=doc.where(("phases", i, "id")))
        seen.add(phase.id)


def _resolve_phase(i: int, phase: PhaseSpec, inventory: Inventory, doc: YamlDoc) -> Phase:
    if phase.hosts == "all":
        hosts = [n for n, node in inventory.nodes.items() if not node.spec.optional]
    else:
        hosts = []
        for j, word in enumerate(phase.hosts):
            if word in inventory.nodes:
                hosts.append(word)
            elif word in inventory.spec.groups:
                hosts.extend(n.name for n in inventory.group_members(word))
            else:
                raise InputError(
                    f"phases[{i}].hosts[{j}]: no node or group named {word!r} in the inventory"
                    f"{did_you_mean(word, [*inventory.nodes, *inventory.spec.groups])}",
                    file=doc.where(("phases", i, "hosts", j)),
                )
    for j, svc in enumerate(phase.services):
        if svc.host not in inventory.nodes:
            raise InputError(
                f"phases[{i}].services[{j}].host: service {svc.name!r} is assigned to node "
                f"{svc.host!r}, which is not in the inventory {inventory.path}{did_you_mean(svc.host, inventory.nodes)}",
                file=doc.where(("phases", i, "services", j, "host")),
            )
        if svc.host not in hosts:
            hosts.append(svc.host)
    return Phase(spec=phase, hosts=tuple(dict.fromkeys(hosts)))


def _check_services(spec: PlaybookFile, inventory: Inventory, doc: YamlDoc) -> None:
    seen: dict[str, tuple[int, int]] = {}
    for i, phase in enumerate(spec.phases):
        names_here = {s.name for s in phase.services}
        for j, svc in enumerate(phase.services):
            if svc.name in seen:
                raise InputError(
                    f"phases[{i}].services[{j}].name: service {svc.name!r} is defined twice",
                    file=doc.where(("phases", i, "services", j, "name")),
                )
            seen[svc.name] = (i, j)
        for j, svc in enumerate(phase.services):
            for k, dep in enumerate(svc.depends_on):
                if dep not in names_here and dep not in seen:
                    raise InputError(
                        f"phases[{i}].services[{j}].depends_on[{k}]: no service named {dep!r} in this or an "
                        f"earlier phase{did_you_mean(dep, [*names_here, *seen])}",
                        file=doc.where(("phases", i, "services", j, "depends_on", k)),
                    )


def _check_cycles(spec: PlaybookFile, doc: YamlDoc) -> None:
    """depends_on must not loop: compose would refuse the project, the deploy order is undefined."""
    deps = {s.name: list(s.depends_on) for p in spec.phases for s in p.services}
    where = {s.name: (i, j) for i, p in enumerate(spec.phases) for j, s in enumerate(p.services)}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in deps.get(name, []):
            if state.get(dep) == 1:
                cycle = [*trail[trail.index(dep):], dep] if dep in trail else [name, dep]
                i, j = where[name]
                k = deps[name].index(dep)
                raise InputError(
                    f"phases[{i}].services[{j}].depends_on[{k}]: services depend on each other in a "
                    f"cycle: {' -> '.join(cycle)}",
                    file=doc.where(("phases", i, "services", j, "depends_on", k)))
            if state.get(dep) is None and dep in deps:
                visit(dep, [*trail, dep])
        state[name] = 2

    for name in deps:
        if state.get(name) is None:
            visit(name, [name])


def _check_inventory_refs(spec: PlaybookFile, inventory: Inventory) -> None:
    """nodes.<n>.services.<s> and nodes.<n>.protected must name services the playbook runs there."""
    hosts = {s.name: s.host for p in spec.phases for s in p.services}
    for node in inventory.nodes.values():
        for name in node.spec.services:
            loc: PathKey = ("nodes", node.name, "services", name)
            if name not in hosts:
                raise InputError(
                    f"{format_loc(loc)}: no service named {name!r} in the playbook{did_you_mean(name, hosts)}",
                    file=inventory.where(loc))
            if hosts[name] != node.name:
                raise InputError(
                    f"{format_loc(loc)}: service {name!r} runs on {hosts[name]}, not {node.name}: "
                    f"these settings would never be used (move them to nodes.{hosts[name]}.services)",
                    file=inventory.where(loc))
        mine = {s for s, h in hosts.items() if h == node.name}
        for k, name in enumerate(node.spec.protected):
            if name not in mine:
                loc = ("nodes", node.name, "protected", k)
                raise InputError(
                    f"{format_loc(loc)}: no service named {name!r} runs on {node.name}, so nothing would be "
                    f"protected{did_you_mean(name, mine)}", file=inventory.where(loc))
