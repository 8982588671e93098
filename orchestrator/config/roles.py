"""Roles: how one service is run and checked.

A role lives in `roles/<name>/role.yml` beside its config templates. String values may
hold Jinja expressions (`"{{ port }}"`) that are rendered per service instance with the
instance's variables; `render.py` turns a role + instance into a concrete service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from orchestrator.config.models import Duration, Model
from orchestrator.config.yamlfile import load_yaml, validate
from orchestrator.errors import InputError

Templated = int | str
_ARCHES = ("amd64", "arm64")


class ImageSpec(Model):
    name: str
    by_arch: dict[Literal["amd64", "arm64"], str] = {}
    platforms: list[str] = ["linux/amd64", "linux/arm64"]
    version_command: list[str] = []


class PortSpec(Model):
    port: Templated
    target: Templated
    protocol: Literal["tcp", "udp"] = "tcp"
    when: bool | str = True


class HealthcheckSpec(Model):
    test: list[str]
    shell: bool = False
    interval: Duration = 10.0
    timeout: Duration = 5.0
    retries: int = Field(5, ge=1)
    start_period: Duration = 0.0


class LimitsSpec(Model):
    cpus: float | str | None = None
    memory: str | None = None


class ProbeSpec(Model):
    kind: Literal["http", "tcp", "compose"]
    port: Templated | None = None
    path: str = "/"
    status: int = 200
    json_field: dict[str, Any] = Field({}, alias="json")
    body_contains: str | None = None
    bearer_secret: str | None = None
    timeout: Duration = 5.0

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"an HTTP probe path starts with '/', got {value!r}")
        return value


class HealthSpec(Model):
    probes: list[ProbeSpec] = []
    healthy_deadline: Duration | None = None
    min_healthy_time: Duration | None = None


class ConsulCheckSpec(Model):
    kind: Literal["http", "tcp"]
    port: Templated
    path: str = "/"
    interval: Duration = 10.0
    timeout: Duration = 5.0


class ConsulSpec(Model):
    name: str | None = None
    tags: list[str] = []
    meta: dict[str, str] = {}
    check: ConsulCheckSpec | None = None


class TemplateSpec(Model):
    src: str
    dest: str
    mode: int = 0o644


class ResourcesSpec(Model):
    ram_gb: float = Field(0.25, ge=0)
    disk_gb: float = Field(1.0, ge=0)


class RoleSpec(Model):
    description: str = ""
    image: ImageSpec
    defaults: dict[str, Any] = {}
    required_vars: list[str] = []
    command: list[Templated] | None = None
    entrypoint: list[str] | None = None
    user: str | None = None
    root_reason: str | None = None
    ports: list[PortSpec] = []
    volumes: list[str] = []
    env: dict[str, Templated | bool | float | None] = {}
    secret_env: dict[str, str] = {}
    healthcheck: HealthcheckSpec | None = None
    restart: Literal["no", "always", "on-failure", "unless-stopped"] = "unless-stopped"
    limits: LimitsSpec = LimitsSpec()
    gpu: bool = False
    shm_size: str | None = None
    ulimits: dict[str, Any] = {}
    cap_add: list[str] = []
    read_only: bool = False
    tmpfs: list[str] = []
    resources: ResourcesSpec = ResourcesSpec()
    health: HealthSpec = HealthSpec()
    consul: ConsulSpec | None = None
    templates: list[TemplateSpec] = []
    depends_on: list[str] = []

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and value.split(":")[0] in {"0", "root"}:
            raise ValueError("use user: null with a root_reason to run as root")
        return value


_SECRET_REF = re.compile(r"secrets\.([A-Za-z0-9_]+)")


def secret_names(value: str) -> list[str]:
    """Secrets an env entry uses: a bare name, or a template with `secrets.<name>`."""
    if "{{" in value:
        return _SECRET_REF.findall(value)
    return [value]


@dataclass(frozen=True)
class Role:
    name: str
    dir: Path
    spec: RoleSpec

    @property
    def file(self) -> Path:
        return self.dir / "role.yml"

    def template_path(self, src: str) -> Path:
        return self.dir / src


def load_role(roles_dir: Path, name: str) -> Role:
    role_dir = roles_dir / name
    file = role_dir / "role.yml"
    if not file.is_file():
        known = ", ".join(sorted(p.name for p in roles_dir.iterdir() if (p / "role.yml").is_file())) if roles_dir.is_dir() else ""
        raise InputError(f"no role named {name!r} in {roles_dir} (known: {known})")
    doc = load_yaml(file, what="role")
    spec = validate(RoleSpec, doc, "role")
    if spec.user is None and not spec.root_reason:
        raise InputError(
            "user: runs as root without a root_reason: set user (e.g. '1000:1000') or say why",
            file=doc.where(("user",)),
        )
    for i, tpl in enumerate(spec.templates):
        if not (role_dir / tpl.src).is_file():
            raise InputError(
                f"templates[{i}].src: no template file {tpl.src!r} in {role_dir}",
                file=doc.where(("templates", i, "src")),
            )
    return Role(name=name, dir=role_dir, spec=spec)


def load_roles(roles_dir: Path, names: set[str]) -> dict[str, Role]:
    return {name: load_role(roles_dir, name) for name in sorted(names)}
