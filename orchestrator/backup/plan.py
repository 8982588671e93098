"""What a `swarm backup`, `backups` or `restore` acts on: the backup targets of the chosen services.

The services come from the run's selection (`--phase`, `--limit`, the same rules as every
command); each one's target is rendered from its role (`render.backups.target_for`: method,
retention, copy node, dependents, every value checked and blamed on the file and line that
set it) before anything connects.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.config.inventory import did_you_mean
from orchestrator.config.project import Project
from orchestrator.engine.selection import select
from orchestrator.errors import InputError
from orchestrator.render.backups import Target, blame, target_for
from orchestrator.render.services import Service, build_services


def backup_targets(project: Project, services: Sequence[Service] | None = None, *,
                   names: Sequence[str] = (), phases: Sequence[int] | None = None,
                   limit: str | None = None) -> list[Target]:
    """The targets of a `swarm backup`: every stateful service of the chosen phases and nodes
    (the run selection's rules; `names`: exactly these services, each of which must have one)."""
    sel = select(project, phases, limit, include_validation=True, render=False, services=services)
    everyone, chosen = list(sel.services), list(sel.selected_services())
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
        raise blame(project, svc, "enabled", f"the backup of {name} is switched off (backup_enabled is false)")
    return target


def _stateful(project: Project, services: Sequence[Service]) -> str:
    return ", ".join(s.name for s in services if project.roles[s.role].spec.backup is not None)


