"""A project: inventory + playbook + roles, loaded and cross-checked together."""

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


@dataclass(frozen=True)
class Project:
    root: Path
    inventory: Inventory
    playbook: Playbook
    roles: dict[str, Role]

    @property
    def roles_dir(self) -> Path:
        return self.root / "roles"


def load_project(
    root: Path | None = None, inventory: Path | None = None, playbook: Path | None = None
) -> Project:
    root = root or find_root()
    inv = load_inventory(inventory or root / DEFAULT_INVENTORY)
    book = load_playbook(playbook or root / DEFAULT_PLAYBOOK, inv)
    roles = _load_roles(root / "roles", book)
    _check_secret_refs(book, roles)
    return Project(root=root, inventory=inv, playbook=book, roles=roles)


def _load_roles(roles_dir: Path, book: Playbook) -> dict[str, Role]:
    """Each role the playbook names, once; a missing one is blamed on the playbook line."""
    roles: dict[str, Role] = {}
    for _, svc in book.all_services():
        if svc.role in roles:
            continue
        if not (roles_dir / svc.role / "role.yml").is_file():
            loc = (*book.loc_of(svc.name), "role")
            known = known_roles(roles_dir)
            raise InputError(f"{format_loc(loc)}: no role named {svc.role!r} in {roles_dir}"
                             f"{did_you_mean(svc.role, known)}", file=book.where(loc))
        roles[svc.role] = load_role(roles_dir, svc.role)
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
