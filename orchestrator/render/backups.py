"""A backup as its role declares it: the target of one stateful service, its retention, its ids.

`target_for(project, service)` renders the `backup:` block of the service's role with the
service's own variables (so `keep: "{{ backup_keep }}"` takes the inventory's value) and
checks the result: the method's parameters, the retention (`backup_keep` at least 1 and/or
`backup_keep_for`, `backup_max_age`), the node a copy goes to, the services a restore stops.
A problem is an `InputError` (exit 2) naming the file, line and key that set the value.
Pure, like the rest of render/: `swarm backup` and `restore` (backup/) act on these targets,
and preflight checks that each has a backup younger than its `max_age`.

A backup's id is the UTC time it was taken (`20261201T031500Z`).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.commands.backup import BACKUP_ID, SAFE_NAME
from orchestrator.config.inventory import did_you_mean
from orchestrator.config.project import Project
from orchestrator.config.roles import Role
from orchestrator.errors import InputError
from orchestrator.render.services import Service, merge_settings
from orchestrator.render.templates import render_value

ID_FORMAT = "%Y%m%dT%H%M%SZ"
_DURATION = re.compile(r"([0-9]{1,6})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def new_id(now: float) -> str:
    return time.strftime(ID_FORMAT, time.gmtime(now))


def id_time(backup_id: str) -> float:
    """The epoch second a backup id names."""
    return float(calendar.timegm(time.strptime(backup_id, ID_FORMAT)))


def is_id(text: str) -> bool:
    return BACKUP_ID.fullmatch(text) is not None


def parse_span(text: str) -> float:
    """`7d`, `26h`, `1d12h`, `90m` -> seconds (ValueError otherwise)."""
    compact = text.strip()
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"expected a duration like 26h, 7d or 1d12h, got {compact!r}")
    return float(sum(int(n) * _UNIT[u] for n, u in parts))


def show_span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Target:
    """One stateful service, its backup method (with rendered parameters) and its retention."""

    service: str
    role: str
    node: str
    address: str
    phase: int
    project: str                       # the node's compose project
    deploy_root: str
    method: str
    options: dict[str, Any]            # the method's parameters, rendered and checked
    keep: int | None
    keep_for: float | None
    max_age: float
    copy_to: str | None
    dependents: tuple[tuple[str, str], ...] = ()   # (node, service) a restore stops and re-gates
    contains_secrets: bool = False
    protected: bool = False

    @property
    def service_dir(self) -> str:
        return f"{self.deploy_root}/backups/{self.service}"

    def directory(self, backup_id: str) -> str:
        return f"{self.service_dir}/{backup_id}"

    def describe_retention(self) -> str:
        parts = ([f"the newest {self.keep}"] if self.keep is not None else []) + (
            [f"none older than {show_span(self.keep_for)}"] if self.keep_for is not None else [])
        return " and ".join(parts)


_UNSET = (None, "", "None", "none", "null")  # jinja renders a null variable as "None"
_VAR_REF = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_DB_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")
_ABS_DIR = re.compile(r"(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}){1,16}")


def target_for(project: Project, svc: Service) -> Target | None:
    """The service's backup target; None when its role declares none or it is switched off."""
    role = project.roles[svc.role]
    spec = role.spec.backup
    if spec is None:
        return None
    checker = _Checker(project, svc, role)
    data = render_value(spec.model_dump(), svc.vars, role.where, ("backup",))
    if not checker.flag("enabled", data["enabled"]):
        return None
    keep = checker.keep(data["keep"])
    keep_for = checker.span("keep_for", data["keep_for"], optional=True)
    if keep is None and keep_for is None:
        raise checker.fail("keep", "backup_keep and backup_keep_for are both unset: backups would pile up "
                                   "forever; set one (a count, or an age like 30d)")
    node = project.inventory.node(svc.node)
    return Target(
        service=svc.name, role=svc.role, node=svc.node, address=svc.address, phase=svc.phase,
        project=node.project, deploy_root=node.deploy_root, method=spec.method,
        options=checker.options(spec.method, data), keep=keep, keep_for=keep_for,
        max_age=checker.span("max_age", data["max_age"]) or 0.0,
        copy_to=checker.copy_to(data["copy_to"]),
        dependents=_dependents(project, svc, checker, data),
        contains_secrets=bool(spec.contains_secrets), protected=svc.protected,
    )



def _dependents(project: Project, svc: Service, checker: _Checker, data: dict[str, Any]
                ) -> tuple[tuple[str, str], ...]:
    book = project.playbook
    names: list[str] = []
    if data["stop_dependents"]:
        names += [s.name for _, s in book.all_services() if svc.name in s.depends_on]
    for i, item in enumerate(data["dependents"]):
        name = str(item)
        if not any(s.name == name for _, s in book.all_services()):
            raise checker.fail(f"dependents[{i}]", f"no service named {name!r} in {book.path}")
        names.append(name)
    return tuple((book.service(n)[1].host, n) for n in dict.fromkeys(names) if n != svc.name)


# ---------------------------------------------------------------- checks, blamed on their source


class _Checker:
    """Checks one rendered backup block; a problem names where its value was set."""

    def __init__(self, project: Project, svc: Service, role: Role) -> None:
        self.project, self.svc, self.role = project, svc, role

    def fail(self, key: str, problem: str) -> InputError:
        raw = getattr(self.role.spec.backup, key.split("[")[0], None)
        match = _VAR_REF.fullmatch(raw.strip()) if isinstance(raw, str) else None
        if match is not None:
            _, instance = self.project.playbook.service(self.svc.name)
            node = self.project.inventory.node(self.svc.node)
            settings = merge_settings(self.project, instance, self.role, node)
            origin = settings.origins.get(match.group(1))
            if origin is not None:
                message, file = origin.blame(f"{problem} (backup of {self.svc.name})")
                return InputError(message, file=file)
        loc: tuple[str | int, ...] = ("backup", key.split("[")[0])
        return InputError(f"backup.{key}: {problem} (service {self.svc.name})", file=self.role.where(loc))

    def flag(self, key: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.fail(key, f"expected true or false, got {value!r}")

    def keep(self, value: Any) -> int | None:
        if value in _UNSET:
            return None
        number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise self.fail("keep", f"expected a count of at least 1, got {value!r}")
        return number

    def span(self, key: str, value: Any, *, optional: bool = False) -> float | None:
        if optional and value in _UNSET:
            return None
        try:
            seconds = parse_span(str(value)) if isinstance(value, str) else -1.0
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        if seconds <= 0:
            raise self.fail(key, f"expected a duration like 26h or 7d, got {value!r}")
        return seconds

    def copy_to(self, value: Any) -> str | None:
        if value in _UNSET:
            return None
        name = str(value)
        nodes = self.project.inventory.nodes
        if name not in nodes:
            raise self.fail("copy_to", f"no node named {name!r}{did_you_mean(name, nodes)}")
        if name == self.svc.node:
            raise self.fail("copy_to", f"{name} is the service's own node: a copy there is no second disk")
        return name

    def options(self, method: str, data: dict[str, Any]) -> dict[str, Any]:
        if method == "pg_dump":
            user = str(data["user"])
            if not _DB_USER.fullmatch(user):
                raise self.fail("user", f"not a PostgreSQL role name: {user!r}")
            dbs = [str(d) for d in data["databases"]]
            for i, db in enumerate(dbs):
                if not SAFE_NAME.fullmatch(db):
                    raise self.fail(f"databases[{i}]", f"a database name of letters, digits and _.- "
                                                       f"(it names a file), got {db!r}")
            return {"user": user, "databases": dbs}
        if method == "redis-rdb":
            for key in ("rdb_file", "aof_dir", "aof_file"):
                self._name(key, data[key])
            return {"data_dir": self._dir("data_dir", data["data_dir"]), "rdb_file": data["rdb_file"],
                    "aof_dir": data["aof_dir"], "aof_file": data["aof_file"]}
        if method == "qdrant-snapshot":
            port = int(data["port"]) if str(data["port"]).isdigit() else 0
            if not 1 <= port <= 65535:
                raise self.fail("port", f"expected a port 1..65535, got {data['port']!r}")
            if data["scheme"] not in ("http", "https"):
                raise self.fail("scheme", f"expected http or https, got {data['scheme']!r}")
            snapshots = self._dir("snapshots_dir", data["snapshots_dir"])
            if snapshots.count("/") < 2:
                raise self.fail("snapshots_dir", "must be a directory below another one, like /qdrant/snapshots")
            return {"port": port, "scheme": data["scheme"], "snapshots_dir": snapshots}
        return {"storage_dir": self._dir("storage_dir", data["storage_dir"])}

    def _name(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
            raise self.fail(key, f"a file name of letters, digits and _.-, got {value!r}")
        return value

    def _dir(self, key: str, value: Any) -> str:
        text = str(value).rstrip("/")
        if not _ABS_DIR.fullmatch(text):
            raise self.fail(key, f"an absolute directory in the container like /data, got {value!r}")
        return text


def blame(project: Project, svc: Service, key: str, problem: str) -> InputError:
    """An error about the service's backup setting `key`, naming the file and line that set it."""
    return _Checker(project, svc, project.roles[svc.role]).fail(key, problem)
