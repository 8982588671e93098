"""A project: inventory + playbook + roles, loaded and cross-checked together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.inventory import Inventory, load_inventory
from orchestrator.config.playbook import Playbook, load_playbook
from orchestrator.config.roles import Role, load_roles, secret_names
from orchestrator.config.yamlfile import load_yaml
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
    roles = load_roles(root / "roles", book.role_names())
    _check_secret_refs(book, roles)
    return Project(root=root, inventory=inv, playbook=book, roles=roles)


def _check_secret_refs(book: Playbook, roles: dict[str, Role]) -> None:
    declared = book.spec.secrets
    for role in roles.values():
        for env_name, value in role.spec.secret_env.items():
            for secret in secret_names(value):
                if secret in declared:
                    continue
                doc = load_yaml(role.file)
                raise InputError(
                    f"secret_env.{env_name}: secret {secret!r} is used but not declared in the "
                    f"playbook's secrets: block ({book.path})",
                    file=doc.where(("secret_env", env_name)),
                )
        for i, probe in enumerate(role.spec.health.probes):
            if probe.bearer_secret and probe.bearer_secret not in declared:
                doc = load_yaml(role.file)
                raise InputError(
                    f"health.probes[{i}].bearer_secret: secret {probe.bearer_secret!r} is used "
                    f"but not declared in the playbook's secrets: block ({book.path})",
                    file=doc.where(("health", "probes", i, "bearer_secret")),
                )
