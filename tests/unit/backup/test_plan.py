"""Which services are backed up and how comes from the roles; retention and the copy from the
inventory; every mistake is exit 2 naming the file, line and key — before anything connects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.backup.plan import backup_targets, restore_target
from orchestrator.config.project import load_project
from orchestrator.errors import InputError

REPO = Path(__file__).resolve().parents[3]
Edit = Callable[[Path, Callable[[dict], None]], None]


def targets(root: Path = REPO, **kw):  # type: ignore[no-untyped-def]
    return {t.service: t for t in backup_targets(load_project(root), **kw)}


def test_the_reference_fleet_backs_up_its_four_stores_by_their_own_methods() -> None:
    found = targets()
    assert {s: (t.node, t.method) for s, t in found.items()} == {
        "vault": ("oracle", "vault-file"), "postgres": ("oracle", "pg_dump"),
        "redis": ("oracle", "redis-rdb"), "qdrant": ("starlord", "qdrant-snapshot")}
    assert found["postgres"].options == {"user": "litellm", "databases": ["litellm"]}
    assert found["qdrant"].options["port"] == 6333 and found["qdrant"].protected
    assert found["vault"].contains_secrets and not found["postgres"].contains_secrets
    assert found["postgres"].dependents == (("oracle", "litellm"),) == found["redis"].dependents
    assert found["postgres"].service_dir == "/opt/ai-swarm/backups/postgres"
    assert (found["redis"].keep, found["redis"].keep_for, found["redis"].max_age) == (7, None, 26 * 3600)


def test_a_cache_without_persistence_is_not_backed_up(project_copy: Path) -> None:
    """redis-cache (overflow) sets persistence: false, which switches its backup off."""
    assert "redis-cache" not in targets()
    with pytest.raises(InputError, match="backup of redis-cache is switched off"):
        backup_targets(load_project(), names=["redis-cache"])


def test_phase_and_limit_choose_the_services() -> None:
    assert set(targets(phases=(2,))) == {"postgres", "redis"}
    assert set(targets(limit="starlord")) == {"qdrant"}
    with pytest.raises(InputError, match="nothing to back up"):
        backup_targets(load_project(), limit="thanos")


def test_retention_and_copy_come_from_the_inventory(project_copy: Path, edit_yaml: Edit) -> None:
    def change(data: dict) -> None:
        data["vars"]["backup_keep"] = 14
        data["nodes"]["oracle"]["services"] = {"postgres": {"backup_copy_to": "starlord", "backup_keep_for": "30d"}}

    edit_yaml(project_copy / "inventory/swarm.yml", change)
    found = targets(project_copy)
    assert (found["postgres"].keep, found["postgres"].keep_for, found["postgres"].copy_to) == (14, 30 * 86400, "starlord")
    assert found["qdrant"].keep == 14 and found["qdrant"].copy_to is None


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("backup_keep", 0, "expected at least 1"),
    ("backup_keep", "all", "expected a whole number"),
    ("backup_max_age", "1 day", "expected text matching"),
    ("backup_copy_to", "mars", "no node named 'mars'"),
    ("backup_copy_to", "oracle", "the service's own node"),
])
def test_bad_retention_names_the_inventory_key(project_copy: Path, edit_yaml: Edit, setting: str, value: object,
                                               says: str) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["oracle"].update(services={"postgres": {setting: value}}))
    with pytest.raises(InputError) as caught:
        backup_targets(load_project(project_copy))
    message = caught.value.message
    assert says in message and f"nodes.oracle.services.postgres.{setting}" in message
    assert "inventory/swarm.yml:" in message


def test_no_limit_at_all_is_refused(project_copy: Path, edit_yaml: Edit) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["oracle"].update(services={"redis": {"backup_keep": None}}))
    with pytest.raises(InputError, match="pile up forever") as caught:
        backup_targets(load_project(project_copy))
    assert "nodes.oracle.services.redis.backup_keep" in caught.value.message


def test_a_backup_setting_on_a_stateless_service_is_a_typo(project_copy: Path, edit_yaml: Edit) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["oracle"].update(services={"litellm": {"backup_keep": 3}}))
    with pytest.raises(InputError, match="unknown setting `backup_keep` for role litellm"):
        backup_targets(load_project(project_copy))


def test_a_typo_in_a_role_backup_block_names_the_role_line(project_copy: Path) -> None:
    role = project_copy / "roles/postgres/role.yml"
    role.write_text(role.read_text().replace("  databases:", "  databse:"))
    with pytest.raises(InputError) as caught:
        load_project(project_copy)
    assert "roles/postgres/role.yml:" in caught.value.message
    assert "backup.pg_dump.databases: required key is missing (and 1 more)" in caught.value.message


def test_an_unknown_method_is_refused(project_copy: Path) -> None:
    role = project_copy / "roles/redis/role.yml"
    role.write_text(role.read_text().replace("method: redis-rdb", "method: rsync"))
    with pytest.raises(InputError, match="roles/redis/role.yml:"):
        load_project(project_copy)


def test_a_database_name_that_would_leave_its_directory_names_the_role(project_copy: Path) -> None:
    role = project_copy / "roles/postgres/role.yml"
    role.write_text(role.read_text().replace('databases: ["{{ db_name }}"]', 'databases: ["../x"]'))
    with pytest.raises(InputError, match=r"backup.databases\[0\]: a database name") as caught:
        backup_targets(load_project(project_copy))
    assert "roles/postgres/role.yml:" in caught.value.message


def test_unknown_and_stateless_services_are_refused_by_name() -> None:
    project = load_project()
    with pytest.raises(InputError, match="no service of that name.*did you mean `postgres`"):
        restore_target(project, "postgre")
    with pytest.raises(InputError, match="role litellm declares no backup"):
        restore_target(project, "litellm")
    assert restore_target(project, "vault").method == "vault-file"


def test_dependents_follow_the_playbook_and_the_role(project_copy: Path) -> None:
    role = project_copy / "roles/qdrant/role.yml"
    role.write_text(role.read_text() + "  dependents: [rag-pipeline]\n")
    assert targets(project_copy)["qdrant"].dependents == (("thanos", "rag-pipeline"),)
    role.write_text(role.read_text().replace("[rag-pipeline]", "[rag-pipelin]"))
    with pytest.raises(InputError, match=r"backup.dependents\[0\]: no service named 'rag-pipelin'"):
        backup_targets(load_project(project_copy))
