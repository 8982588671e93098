"""Roles: how one service is run and checked.

A role lives in `roles/<name>/role.yml` beside its config templates. String values may
hold Jinja expressions (`"{{ port }}"`) that are rendered per service instance with the
instance's variables; `render/services.py` turns a role + instance into a concrete service.

A role declares its settings: every key of `defaults` and `required_vars`, typed by its
default (an int default makes an int setting, `port`/`*_port` a port) or explicitly in
`settings:` (type, range, allowed values) — see `config/settings.py`. Anything else set on
one of its instances is a typo and an error.

A role whose service holds state declares how it is backed up (`backup:`, see
`BackupSpec` and docs/backup.md): the method (the service's own supported way) and its
parameters; every such role also gets the retention settings (`BACKUP_SETTINGS`), so
the inventory sets `backup_keep`, `backup_max_age`, ... like any other setting.

Loading checks what the role could get wrong on a node: template paths stay inside the
role directory and the release, env names are names, and no secret is expanded into a
command line (`ps` on the node would show it): a program gets a secret through its
environment, or its standard input from a here-document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from orchestrator.config.models import (
    ConsulInterval,
    Duration,
    EnvName,
    Interval,
    Line,
    Model,
    NonEmptyLine,
    RelPath,
    quoted,
)
from orchestrator.config.rollout import RolloutSpec
from orchestrator.config.settings import SettingSpec, compiled_pattern
from orchestrator.config.yamlfile import YamlDoc, load_yaml, validate
from orchestrator.errors import InputError

Templated = int | str
_ARCHES = ("amd64", "arm64")


def parse_mode(value: Any) -> int:
    """A file mode: "0640", "0o640", "640" or 640 (octal digits, as chmod reads them)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a file mode like \"0640\", got {value!r}")
    text = str(value).strip() if isinstance(value, int | str) else ""
    digits = text[2:] if text.lower().startswith("0o") else text
    if not re.fullmatch(r"[0-7]{3,4}", digits) or int(digits, 8) > 0o777:
        raise ValueError(f"expected a file mode like \"0640\" (octal, at most 0777), got {quoted(value)}")
    return int(digits, 8)


Mode = Annotated[int, BeforeValidator(parse_mode)]


class ImageSpec(Model):
    name: NonEmptyLine
    by_arch: dict[Literal["amd64", "arm64"], NonEmptyLine] = {}
    platforms: list[Literal["linux/amd64", "linux/arm64"]] = ["linux/amd64", "linux/arm64"]
    version_command: list[Line] = []


class PortSpec(Model):
    port: Templated
    target: Templated
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: str | None = None       # templated; "" publishes on every interface
    # Who may reach it (templated): `node` (published on the node's loopback only: the node
    # itself, and swarm through its SSH connection), `fleet` (the node's address: the other
    # nodes and the controller), `public` (the node's address, meant for clients); an explicit
    # host_ip wins. Never every interface unless the node has no IP address in the inventory.
    reach: str | None = None
    when: bool | str = True


class HealthcheckSpec(Model):
    test: list[Templated]
    shell: bool = False
    interval: Interval = 10.0
    timeout: Interval = 5.0
    retries: int = Field(5, ge=1, le=1000)
    start_period: Duration = 0.0


class LimitsSpec(Model):
    cpus: float | str | None = None
    memory: str | None = None


class ProbeSpec(Model):
    kind: Literal["http", "tcp", "compose"]
    port: Templated | None = None
    scheme: Literal["http", "https"] | str = "http"
    path: Line = "/"
    status: int = Field(200, ge=100, le=599)
    json_field: dict[str, Any] = Field({}, alias="json")
    body_contains: str | None = None
    bearer_secret: str | None = None
    timeout: Interval = 5.0

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"an HTTP probe path starts with '/', got {quoted(value)}")
        return value


class HealthSpec(Model):
    probes: list[ProbeSpec] = []
    healthy_deadline: Duration | None = None
    min_healthy_time: Duration | None = None


class ConsulCheckSpec(Model):
    kind: Literal["http", "tcp"]
    port: Templated
    path: Line = "/"
    interval: ConsulInterval = 10.0
    timeout: Interval = 5.0


class ConsulSpec(Model):
    name: str | None = None
    tags: list[Templated] = []
    meta: dict[str, Templated] = {}
    check: ConsulCheckSpec | None = None


ConfigCheck = Literal["haproxy", "prometheus", "prometheus-rules", "litellm", "grafana-datasources",
                      "grafana-dashboards", "none"]


class TemplateSpec(Model):
    src: RelPath
    dest: RelPath
    mode: Mode = 0o644
    check: ConfigCheck | None = None   # which program's check applies (default: known from the mount)


class WeightsSpec(Model):
    """The model a role serves, as a hub repository at a revision (render/weights.py, docs/models.md)."""

    repo: Templated
    revision: Templated | None = None


class ResourcesSpec(Model):
    ram_gb: float = Field(0.25, ge=0, le=100_000)
    disk_gb: float = Field(1.0, ge=0, le=1_000_000)


# ---------------------------------------------------------------- backups

BackupMethod = Literal["pg_dump", "redis-rdb", "qdrant-snapshot", "vault-file"]


class _BackupBase(Model):
    """What every backup declares; values may be templates (`"{{ backup_keep }}"`), checked
    after rendering (orchestrator/backup/plan.py)."""

    enabled: Templated | bool = "{{ backup_enabled }}"
    keep: Templated | None = "{{ backup_keep }}"           # how many to keep (the newest is always kept)
    keep_for: Templated | None = "{{ backup_keep_for }}"   # and/or for how long (7d, 36h)
    max_age: Templated = "{{ backup_max_age }}"            # older than this = stale (preflight, alert)
    copy_to: Templated | None = "{{ backup_copy_to }}"     # another node that keeps a copy
    stop_dependents: bool = True                           # a restore stops what depends_on it
    dependents: list[Templated] = []                       # ... and these services too
    contains_secrets: bool = False                         # only checksums in output, never file names


class PgDumpBackup(_BackupBase):
    """A plain `pg_dump --create` of each database and `pg_dumpall --globals-only`, in the
    running container; restored by dropping the database and replaying its dump with psql."""

    method: Literal["pg_dump"]
    user: Templated
    databases: list[Templated] = Field(min_length=1)


class RedisRdbBackup(_BackupBase):
    """`BGSAVE`, then the RDB file it wrote; restored as the RDB file and as the AOF base."""

    method: Literal["redis-rdb"]
    data_dir: Line = "/data"
    rdb_file: Line = "dump.rdb"
    aof_dir: Line = "appendonlydir"
    aof_file: Line = "appendonly.aof"


class QdrantSnapshotBackup(_BackupBase):
    """Qdrant's snapshot API, one snapshot per collection; restored with `snapshots/recover`."""

    method: Literal["qdrant-snapshot"]
    port: Templated
    scheme: Templated = "http"
    snapshots_dir: Line = "/qdrant/snapshots"


class VaultFileBackup(_BackupBase):
    """A copy of the file storage backend's directory taken while the container is frozen."""

    method: Literal["vault-file"]
    storage_dir: Line = "/vault/file"
    contains_secrets: bool = True


BackupSpec = Annotated[PgDumpBackup | RedisRdbBackup | QdrantSnapshotBackup | VaultFileBackup,
                       Field(discriminator="method")]

_DURATION_TEXT = r"(?:[0-9]{1,6}[smhd]){1,4}"
BACKUP_SETTINGS: dict[str, SettingSpec] = {
    "backup_enabled": SettingSpec(type="bool", description="back this service up (swarm backup)"),
    "backup_keep": SettingSpec(type="int", min=1, max=10000, nullable=True,
                               description="how many backups to keep on the node (null: by age only)"),
    "backup_keep_for": SettingSpec(type="string", pattern=_DURATION_TEXT, nullable=True,
                                   description="delete backups older than this (7d, 36h; null: by count only)"),
    "backup_max_age": SettingSpec(type="string", pattern=_DURATION_TEXT,
                                  description="a newest backup older than this is stale (preflight, alert)"),
    "backup_copy_to": SettingSpec(type="string", pattern=r"|[a-z0-9][a-z0-9_-]{0,62}",
                                  description="another node that keeps a copy of each backup"),
}
"""Settings of every role with a `backup:` block (docs/backup.md), like ENGINE_SETTINGS."""
BACKUP_DEFAULTS: dict[str, Any] = {"backup_enabled": True, "backup_keep": 7, "backup_keep_for": None,
                                   "backup_max_age": "26h", "backup_copy_to": ""}


class RoleSpec(Model):
    description: str = ""
    image: ImageSpec
    defaults: dict[str, Any] = {}
    required_vars: list[str] = []
    settings: dict[str, SettingSpec] = {}
    command: list[Templated] | None = None
    entrypoint: list[Templated] | None = None
    user: str | None = None
    root_reason: str | None = None
    ports: list[PortSpec] = []
    volumes: list[str] = []
    env: dict[EnvName, Templated | bool | float | None] = {}
    secret_env: dict[EnvName, NonEmptyLine] = {}
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
    backup: BackupSpec | None = None
    rollout: RolloutSpec = RolloutSpec()
    weights: WeightsSpec | None = None   # staged into the node's model store before a deploy

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and value.split(":")[0] in {"0", "root"}:
            raise ValueError("use user: null with a root_reason to run as root")
        return value

    @field_validator("cap_add")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        for cap in value:
            if not re.fullmatch(r"[A-Z][A-Z_]{1,40}", cap):
                raise ValueError(f"not a Linux capability name like IPC_LOCK, got {quoted(cap)}")
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
    doc: YamlDoc | None = field(default=None, repr=False, compare=False)

    @property
    def file(self) -> Path:
        return self.dir / "role.yml"

    def template_path(self, src: str) -> Path:
        return self.dir / src

    def where(self, loc: tuple[str | int, ...]) -> str:
        """`file:line` of a key path in role.yml."""
        return self.doc.where(loc) if self.doc is not None else str(self.file)


def known_roles(roles_dir: Path) -> list[str]:
    if not roles_dir.is_dir():
        return []
    return sorted(p.name for p in roles_dir.iterdir() if (p / "role.yml").is_file())


def load_role(roles_dir: Path, name: str) -> Role:
    role_dir = roles_dir / name
    file = role_dir / "role.yml"
    if not file.is_file():
        raise InputError(f"no role named {name!r} in {roles_dir} (known: {', '.join(known_roles(roles_dir))})")
    doc = load_yaml(file, what="role")
    spec = _with_backup_settings(validate(RoleSpec, doc, "role"))
    role = Role(name=name, dir=role_dir, spec=spec, doc=doc)
    if spec.user is None and not spec.root_reason:
        raise InputError(
            "user: runs as root without a root_reason: set user (e.g. '1000:1000') or say why",
            file=doc.where(("user",)),
        )
    _check_templates(role)
    _check_settings(role)
    _check_secret_arguments(role)
    return role


def _with_backup_settings(spec: RoleSpec) -> RoleSpec:
    """A role with a backup gets the retention settings; its own defaults and settings win."""
    if spec.backup is None:
        return spec
    return spec.model_copy(update={"defaults": {**BACKUP_DEFAULTS, **spec.defaults},
                                   "settings": {**BACKUP_SETTINGS, **spec.settings}})


def _check_templates(role: Role) -> None:
    dests: dict[str, int] = {}
    base = role.dir.resolve()
    for i, tpl in enumerate(role.spec.templates):
        src = role.dir / tpl.src
        if not src.is_file() or not src.resolve().is_relative_to(base):
            raise InputError(f"templates[{i}].src: no template file {tpl.src!r} in {role.dir}",
                             file=role.where(("templates", i, "src")))
        if tpl.dest in dests:
            raise InputError(f"templates[{i}].dest: {tpl.dest!r} is also written by templates[{dests[tpl.dest]}]",
                             file=role.where(("templates", i, "dest")))
        dests[tpl.dest] = i


def _check_settings(role: Role) -> None:
    spec = role.spec
    for key in [*spec.defaults, *spec.required_vars, *spec.settings]:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", key):
            loc = ("settings" if key in spec.settings else "defaults", key)
            raise InputError(f"{loc[0]}.{key[:64]}: setting names use letters, digits and '_'",
                             file=role.where(loc))
    for key, setting in spec.settings.items():
        problem = _pattern_problem(setting)
        if problem:
            raise InputError(f"settings.{key}: {problem}", file=role.where(("settings", key)))
        if key in spec.defaults and not _is_template(spec.defaults[key]):
            problem = setting.problem(spec.defaults[key])
            if problem:
                raise InputError(f"defaults.{key}: {problem}", file=role.where(("defaults", key)))


def _pattern_problem(setting: SettingSpec) -> str | None:
    """A pattern RE2 cannot compile (a backreference, lookaround), here or in items/keys."""
    for spec in (setting, setting.items, setting.keys):
        if spec is None:
            continue
        if spec is not setting:
            problem = _pattern_problem(spec)
            if problem:
                return problem
        elif spec.pattern is not None:
            try:
                compiled_pattern(spec.pattern)
            except ValueError as exc:
                return f"pattern {spec.pattern[:80]!r}: {exc}"
    return None


def _is_template(value: Any) -> bool:
    """A default that is, or holds, a template: checked per instance once rendered."""
    if isinstance(value, list):
        return any(_is_template(v) for v in value)
    if isinstance(value, dict):
        return any(_is_template(v) for v in value.values())
    return isinstance(value, str) and ("{{" in value or "{%" in value)


# ---------------------------------------------------------------- secrets on command lines

_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")
_ASSIGNMENT = re.compile(r"(?:^|[\s;&|(])(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*=\"?$")


def _expansions(text: str, names: set[str]) -> list[str]:
    """Secret env names the shell would expand into a program's arguments in `text`.

    Allowed: the right-hand side of a variable assignment (`PGPASSWORD="$$X" psql ...` puts
    it in psql's environment) and a here-document body (the program's stdin).
    """
    found: list[str] = []
    lines = text.replace("$$", "$").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        for name in names:
            for match in re.finditer(rf"\$\{{?{name}(?![A-Za-z0-9_])", line):
                if not _ASSIGNMENT.search(line[:match.start()]):
                    found.append(name)
        heredoc = _HEREDOC.search(line)
        i += 1
        if heredoc:  # the body goes to the program's stdin, not its arguments
            while i < len(lines) and lines[i].strip() != heredoc.group(2):
                i += 1
            i += 1
    return found


def _check_secret_arguments(role: Role) -> None:
    names = set(role.spec.secret_env)
    if not names:
        return
    spec = role.spec
    places: list[tuple[tuple[str | int, ...], list[Templated]]] = [
        (("command",), spec.command or []), (("entrypoint",), spec.entrypoint or []),
        (("healthcheck", "test"), spec.healthcheck.test if spec.healthcheck else [])]
    for loc, items in places:
        for i, item in enumerate(items):
            used = _expansions(str(item), names)
            if used:
                raise InputError(
                    f"{'.'.join(str(p) for p in loc)}[{i}]: expands secret_env {used[0]} into a command "
                    "line, where every user of the node can read it (ps, /proc): pass it in the program's "
                    "environment (an assignment like PGPASSWORD=\"$$X\" before the command, or a variable "
                    "it reads, e.g. REDISCLI_AUTH) or on its stdin (a here-document)",
                    file=role.where((*loc, i)))


def load_roles(roles_dir: Path, names: set[str]) -> dict[str, Role]:
    return {name: load_role(roles_dir, name) for name in sorted(names)}
