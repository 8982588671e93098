"""A project: inventory + playbook + roles, loaded and cross-checked together.

Roles are looked up along a search path: the project's own `roles/` first, then the roles
swarm ships (the repository's `roles/`, beside this package). So a project of its own — an
example under `examples/`, or one `swarm init` wrote — adds only the roles it needs and
reuses the shared ones (vllm, litellm, haproxy, ...) without copying them; a role of the
same name in the project's `roles/` takes precedence. The default playbook is
`playbooks/ai-swarm.yml`, or the one playbook a project's `playbooks/` holds.
"""

from __future__ import annotations

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
    has it; a missing one is blamed on the playbook line."""
    roles: dict[str, Role] = {}
    for _, svc in book.all_services():
        if svc.role in roles:
            continue
        found = next((d for d in search if (d / svc.role / "role.yml").is_file()), None)
        if found is None:
            loc = (*book.loc_of(svc.name), "role")
            known = {name for d in search for name in known_roles(d)}
            where = " or ".join(str(d) for d in search)
            raise InputError(f"{format_loc(loc)}: no role named {svc.role!r} in {where}"
                             f"{did_you_mean(svc.role, known)}", file=book.where(loc))
        roles[svc.role] = load_role(found, svc.role)
    return dict(sorted(roles.items()))


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
