"""Playbook: what runs where, phase by phase.

Phases follow the reference plan: 0 validation (preflight only), 1 infrastructure
(docker network and directories on every node), then service phases that each bring a
set of service instances (a role + vars, on one node) up behind a health gate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from orchestrator.config.inventory import Inventory
from orchestrator.config.models import NAME_RE, Duration, Model
from orchestrator.config.yamlfile import YamlDoc, load_yaml, validate
from orchestrator.errors import InputError


class GateSpec(Model):
    """Nomad-style update knobs: every probe must pass and stay passing."""

    healthy_deadline: Duration = 300.0
    min_healthy_time: Duration = 10.0
    poll_interval: Duration = 2.0


class ServiceInstance(Model):
    name: str
    role: str
    host: str
    vars: dict[str, Any] = {}
    depends_on: list[str] = []

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(NAME_RE, value):
            raise ValueError("service names use lowercase letters, digits, '-' and '_'")
        return value


class InfrastructureSpec(Model):
    network: bool = True
    directories: list[str] = ["releases", "data", "backups"]


class PhaseSpec(Model):
    id: int = Field(ge=0)
    name: str
    description: str = ""
    kind: Literal["preflight", "infrastructure", "services"] = "services"
    hosts: list[str] | Literal["all"] = []
    optional: bool = False
    services: list[ServiceInstance] = []
    infrastructure: InfrastructureSpec = InfrastructureSpec()
    gate: GateSpec = GateSpec()
    on_failure: Literal["rollback", "stop"] = "rollback"


class SecretSpec(Model):
    path: str
    key: str
    description: str = ""


class PlaybookFile(Model):
    name: str
    description: str = ""
    secrets: dict[str, SecretSpec] = {}
    phases: list[PhaseSpec] = Field(min_length=1)


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
    phases = tuple(_resolve_phase(i, p, inventory, doc) for i, p in enumerate(spec.phases))
    _check_services(spec, inventory, doc)
    return Playbook(path=path, spec=spec, phases=phases)


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
                    f"phases[{i}].hosts[{j}]: no node or group named {word!r} in the inventory",
                    file=doc.where(("phases", i, "hosts", j)),
                )
    for j, svc in enumerate(phase.services):
        if svc.host not in inventory.nodes:
            raise InputError(
                f"phases[{i}].services[{j}].host: service {svc.name!r} is assigned to node "
                f"{svc.host!r}, which is not in the inventory {inventory.path}",
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
                        f"phases[{i}].services[{j}].depends_on[{k}]: no service named {dep!r}",
                        file=doc.where(("phases", i, "services", j, "depends_on", k)),
                    )
    for node in inventory.nodes.values():
        for name in node.spec.services:
            if name not in seen:
                raise InputError(
                    f"nodes.{node.name}.services.{name}: no service named {name!r} in the playbook",
                    file=str(inventory.path),
                )
