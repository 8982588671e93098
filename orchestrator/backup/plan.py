"""From role declarations to backup targets: which services, by which method, kept how long.

`backup_targets(project, ...)` renders the `backup:` block of every selected service's role
with the service's own variables (so `keep: "{{ backup_keep }}"` takes the inventory's
value), and checks the result: the method's parameters, the retention (`backup_keep` at
least 1 and/or `backup_keep_for`, `backup_max_age`), the node a copy goes to, the services a
restore stops. A problem is an `InputError` (exit 2) naming the file, line and key that set
the value — the inventory's `nodes.oracle.services.postgres.backup_keep`, or the role's
`backup.user` — before anything connects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from orchestrator.backup.model import Target, parse_span
from orchestrator.commands.backup import SAFE_NAME
from orchestrator.config.inventory import did_you_mean
from orchestrator.config.project import Project
from orchestrator.config.roles import Role
from orchestrator.errors import InputError
from orchestrator.render.services import Service, build_services, merge_settings
from orchestrator.render.templates import render_value

_UNSET = (None, "", "None", "none", "null")  # jinja renders a null variable as "None"
_VAR_REF = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_DB_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")
_ABS_DIR = re.compile(r"(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}){1,16}")


def backup_targets(project: Project, services: Sequence[Service] | None = None, *,
                   names: Sequence[str] = (), phases: Sequence[int] | None = None,
                   limit: str | None = None) -> list[Target]:
    """The targets of a `swarm backup`: every stateful service of the chosen phases and nodes
    (`names`: exactly these services, each of which must have a backup)."""
    everyone = list(services) if services is not None else build_services(project)
    chosen = _filtered(project, everyone, phases, limit)
    if names:
        return [_named(project, everyone, chosen, name) for name in dict.fromkeys(names)]
    targets = [t for t in (target_for(project, s) for s in chosen) if t is not None]
    if not targets:
        raise InputError("nothing to back up: no service of the chosen phases and nodes has a "
                         f"backup (services with one: {_stateful(project, everyone) or 'none'})")
    return targets


def restore_target(project: Project, name: str, services: Sequence[Service] | None = None) -> Target:
    """The target of `swarm restore --service NAME`."""
    everyone = list(services) if services is not None else build_services(project)
    return _named(project, everyone, everyone, name)


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


# ---------------------------------------------------------------- selection


def _filtered(project: Project, services: Sequence[Service], phases: Sequence[int] | None,
              limit: str | None) -> list[Service]:
    nodes = {n.name for n in project.inventory.select(limit)} if limit else None
    return [s for s in services if (phases is None or s.phase in phases)
            and (nodes is None or s.node in nodes)]


def _named(project: Project, everyone: Sequence[Service], chosen: Sequence[Service], name: str) -> Target:
    by_name = {s.name: s for s in everyone}
    if name not in by_name:
        raise InputError(f"--service {name}: no service of that name in {project.playbook.path}"
                         f"{did_you_mean(name, by_name)} (services with a backup: "
                         f"{_stateful(project, everyone) or 'none'})")
    svc = by_name[name]
    if svc not in chosen:
        raise InputError(f"--service {name}: it runs on {svc.node} in phase {svc.phase}, outside the "
                         "chosen --phase/--limit")
    role = project.roles[svc.role]
    if role.spec.backup is None:
        raise InputError(f"--service {name}: its role {role.name} declares no backup: (a stateless "
                         f"service; services with one: {_stateful(project, everyone) or 'none'})",
                         file=str(role.file))
    target = target_for(project, svc)
    if target is None:
        raise _Checker(project, svc, role).fail("enabled", f"the backup of {name} is switched off "
                                                           "(backup_enabled is false)")
    return target


def _stateful(project: Project, services: Sequence[Service]) -> str:
    return ", ".join(s.name for s in services if project.roles[s.role].spec.backup is not None)


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
