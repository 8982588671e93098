"""Where each role comes from: the project's roles/ first, then swarm's shared roles — and a
project role that is there but broken is an error naming its file, never a silent fallback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config.project import SHARED_ROLES, load_project, role_sources
from orchestrator.errors import InputError

REPO = Path(__file__).resolve().parents[3]


def load_error(root: Path) -> str:
    with pytest.raises(InputError) as err:
        load_project(root)
    assert err.value.exit_code == 2
    return str(err.value)


def test_a_role_the_project_lacks_comes_from_the_shared_roles(project_copy: Path) -> None:
    shutil.rmtree(project_copy / "roles/redis")
    sources = {name: (where, origin) for name, where, origin in role_sources(load_project(project_copy))}
    assert sources["redis"] == (SHARED_ROLES / "redis", "shared")
    assert sources["haproxy"] == (project_copy / "roles/haproxy", "project")


def test_a_project_role_without_role_yml_is_an_error_not_the_shared_one(project_copy: Path) -> None:
    (project_copy / "roles/redis/role.yml").rename(project_copy / "roles/redis/role.yaml")
    text = load_error(project_copy)
    assert f"{project_copy / 'roles/redis/role.yml'} is missing" in text
    assert f"hides the role of the same name in {SHARED_ROLES}" in text


def test_a_project_role_that_fails_to_load_names_its_file(project_copy: Path) -> None:
    (project_copy / "roles/redis/role.yml").write_text("image: [unclosed\n")
    text = load_error(project_copy)
    assert str(project_copy / "roles/redis/role.yml") in text
    assert str(SHARED_ROLES) not in text


@pytest.mark.parametrize("target", ["/etc", "loop", "nowhere", "."], ids=["etc", "itself", "dangling", "dot"])
def test_a_role_dir_linked_out_of_its_search_path_is_refused(project_copy: Path, target: str) -> None:
    link = project_copy / "roles/redis"
    shutil.rmtree(link)
    link.symlink_to(target if target != "loop" else link)
    text = load_error(project_copy)
    assert str(link) in text


def test_a_role_dir_linked_to_another_project_is_refused(project_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere/redis"
    shutil.copytree(project_copy / "roles/redis", elsewhere)
    shutil.rmtree(project_copy / "roles/redis")
    (project_copy / "roles/redis").symlink_to(elsewhere)
    text = load_error(project_copy)
    assert f"resolves to {elsewhere}, outside {project_copy / 'roles'}" in text


def test_a_link_inside_the_search_path_is_a_role(project_copy: Path) -> None:
    shutil.move(project_copy / "roles/redis", project_copy / "roles/redis-7")
    (project_copy / "roles/redis").symlink_to("redis-7")
    assert load_project(project_copy).roles["redis"].spec.image.name.startswith("redis")


def test_plan_v_says_where_each_role_came_from_and_a_bad_link_exits_2(project_copy: Path) -> None:
    example = project_copy / "examples/gateway"
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--project", str(example), "plan", "-v"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"roles (first found along {example / 'roles'}, {SHARED_ROLES}):" in lines
    assert any(line.split() == ["api-gateway", "project", str(example / "roles/api-gateway")] for line in lines)
    assert any(line.split() == ["vault", "shared", str(SHARED_ROLES / "vault")] for line in lines)
    (example / "roles/vault").symlink_to("/etc")
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--project", str(example), "plan"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert f"{example / 'roles/vault'}: resolves to /etc, outside {example / 'roles'}" in done.stderr
    assert "Traceback" not in done.stderr
