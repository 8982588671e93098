"""A project: inventory + playbook + roles, loaded and cross-checked together.

Roles are looked up along a search path: the project's own `roles/` first, then the roles
swarm ships (the repository's `roles/`, beside this package). So a project of its own — an
example under `examples/`, or one `swarm init` wrote — adds only the roles it needs and
reuses the shared ones (vllm, litellm, haproxy, ...) without copying them; a role of the
same name in the project's `roles/` takes precedence. The default playbook is
`playbooks/ai-swarm.yml`, or the one playbook a project's `playbooks/` holds.

Resolution says what it did and never guesses: the first directory of the search path with an
entry of the role's name holds the role, and that role must load — a project's `roles/vllm/`
without a readable `role.yml` is an error naming the file, never a silent fallback to the shared
`vllm`. A role's directory must resolve inside the search directory it was found in: a symlink
out of the project (to /etc, to another project) or a loop is refused (exit 2) naming it.
`role_sources` tells `swarm plan -v` which directory each role came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.inventory import Inventory, did_you_mean, load_inventory
from orchestrator.config.playbook import Playbook, load_playbook
from orchestrator.config.roles import Role, known_roles, load_role, secret_names
from orchestrator.config.yamlfile import format_loc
from orchestrator.errors import InputError
from orchestrator.paths import find_root

DEFAULT_INVENTORY = Path("inventory/swarm.yml")
DEFAULT_PLAYBOOK = Path("playbooks/ai-swarm.yml")
SHARED_ROLES = Path(__file__).resolve().parents[2] / "roles"


@dataclass(frozen=True)
class Project:
    root: Path
    inventory: Inventory
    playbook: Playbook
    roles: dict[str, Role]

    @property
    def roles_dir(self) -> Path:
        return self.root / "roles"

    @property
    def roles_path(self) -> tuple[Path, ...]:
        return roles_search_path(self.root)


def roles_search_path(root: Path) -> tuple[Path, ...]:
    """Where roles are looked up: `<root>/roles`, then swarm's shared roles (once)."""
    own = root / "roles"
    try:
        same = own.resolve() == SHARED_ROLES
    except OSError:
        same = False
    return (own,) if same or not SHARED_ROLES.is_dir() else (own, SHARED_ROLES)


def default_playbook(root: Path) -> Path:
    """`playbooks/ai-swarm.yml`, else the only playbook in `playbooks/` (else the default, to be named missing)."""
    default = root / DEFAULT_PLAYBOOK
    if default.is_file():
        return default
    found = sorted(p for p in (root / "playbooks").glob("*.y*ml") if p.is_file()) if (
        root / "playbooks").is_dir() else []
    if len(found) > 1:
        raise InputError(f"{root / 'playbooks'}: several playbooks ({', '.join(p.name for p in found)}) "
                         "and no ai-swarm.yml", hint="name one with --playbook FILE")
    return found[0] if found else default


def load_project(
    root: Path | None = None, inventory: Path | None = None, playbook: Path | None = None
) -> Project:
    root = root or find_root()
    inv = load_inventory(inventory or root / DEFAULT_INVENTORY)
    book = load_playbook(playbook or default_playbook(root), inv)
    roles = _load_roles(roles_search_path(root), book)
    _check_secret_refs(book, roles)
    return Project(root=root, inventory=inv, playbook=book, roles=roles)


def _load_roles(search: tuple[Path, ...], book: Playbook) -> dict[str, Role]:
    """Each role the playbook names, once, from the first directory of the search path that
    has an entry of its name; a missing one is blamed on the playbook line."""
    roles: dict[str, Role] = {}
    for _, svc in book.all_services():
        if svc.role in roles:
            continue
        found = next((d for d in search if _has_entry(d, svc.role)), None)
        if found is None:
            loc = (*book.loc_of(svc.name), "role")
            known = {name for d in search for name in known_roles(d)}
            where = " or ".join(str(d) for d in search)
            raise InputError(f"{format_loc(loc)}: no role named {svc.role!r} in {where}"
                             f"{did_you_mean(svc.role, known)}", file=book.where(loc))
        roles[svc.role] = _load_found_role(found, svc.role, search)
    return dict(sorted(roles.items()))


def _has_entry(roles_dir: Path, name: str) -> bool:
    """Anything of that name, even a broken symlink or a folder without role.yml, claims the name."""
    return os.path.lexists(roles_dir / name)


def _load_found_role(roles_dir: Path, name: str, search: tuple[Path, ...]) -> Role:
    role_dir = roles_dir / name
    _check_inside(roles_dir, role_dir)
    if not (role_dir / "role.yml").is_file():
        later = [str(d) for d in search[search.index(roles_dir) + 1:] if _has_entry(d, name)]
        shadowed = f"; it hides the role of the same name in {later[0]}" if later else ""
        raise InputError(f"role {name!r}: {role_dir / 'role.yml'} is missing or not a file{shadowed}",
                         hint=f"add role.yml to {role_dir}, or remove {role_dir} to use the other")
    return load_role(roles_dir, name)


def _check_inside(roles_dir: Path, role_dir: Path) -> None:
    """A role directory (or a symlink to one) resolves inside the search directory it is in."""
    try:
        target = role_dir.resolve(strict=True)
        inside = target.is_relative_to(roles_dir.resolve(strict=True)) and target != roles_dir.resolve()
    except FileNotFoundError:
        raise InputError(f"{role_dir}: a symlink to {os.readlink(role_dir)!r}, which does not exist",
                         hint="a role directory is a folder with role.yml") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise InputError(f"{role_dir}: cannot be resolved ({exc})",
                         hint="a role directory is a folder with role.yml, not a symlink loop") from None
    if not inside:
        raise InputError(f"{role_dir}: resolves to {target}, outside {roles_dir}",
                         hint=f"a role is a folder inside {roles_dir}; copy it there instead of "
                              "linking out of the search path")


def role_sources(project: Project) -> list[tuple[str, Path, str]]:
    """(role, directory it was loaded from, "project" or "shared") for each role of the project."""
    own = project.roles_dir
    return [(name, role.dir, "project" if role.dir.parent == own else "shared")
            for name, role in sorted(project.roles.items())]


def _check_secret_refs(book: Playbook, roles: dict[str, Role]) -> None:
    declared = book.spec.secrets
    for role in roles.values():
        for env_name, value in role.spec.secret_env.items():
            for secret in secret_names(value):
                if secret in declared:
                    continue
                raise InputError(
                    f"secret_env.{env_name}: secret {secret!r} is used but not declared in the "
                    f"playbook's secrets: block ({book.path}){did_you_mean(secret, declared)}",
                    file=role.where(("secret_env", env_name)),
                )
        for i, probe in enumerate(role.spec.health.probes):
            if probe.bearer_secret and probe.bearer_secret not in declared:
                raise InputError(
                    f"health.probes[{i}].bearer_secret: secret {probe.bearer_secret!r} is used "
                    f"but not declared in the playbook's secrets: block ({book.path})",
                    file=role.where(("health", "probes", i, "bearer_secret")),
                )
