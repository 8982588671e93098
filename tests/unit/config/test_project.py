"""Playbook + roles loading: cross-file mistakes are input errors naming the file and path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.render.fleet import render_fleet
from orchestrator.render.plan import make_plan


def _phase(data: dict, name: str) -> dict:
    return next(p for p in data["phases"] if p["name"] == name)


def test_shipped_project_loads_with_all_phases(project_copy: Path) -> None:
    project = load_project(project_copy)
    assert [p.id for p in project.playbook.phases] == [0, 1, 2, 3, 4, 5]
    assert project.playbook.phase(3).hosts == ("starlord",)
    assert {s.name for s in project.playbook.phase(3).services} == {
        "qdrant", "vllm-primary", "vllm-secondary", "gpu-monitor"}
    assert project.playbook.phase(1).hosts == ("oracle", "starlord", "thanos")  # overflow is optional


def test_service_on_unknown_node(project_copy: Path, edit_yaml: Callable) -> None:
    book = project_copy / "playbooks/ai-swarm.yml"
    edit_yaml(book, lambda d: _phase(d, "starlord")["services"].append({"name": "x", "role": "redis", "host": "ghost"}))
    with pytest.raises(InputError) as err:
        load_project(project_copy)
    assert "ai-swarm.yml" in str(err.value)
    assert "services[4].host" in str(err.value) and "'ghost'" in str(err.value)


def test_role_that_does_not_exist(project_copy: Path, edit_yaml: Callable) -> None:
    book = project_copy / "playbooks/ai-swarm.yml"
    edit_yaml(book, lambda d: _phase(d, "thanos")["services"].append({"name": "x", "role": "nosuchrole", "host": "thanos"}))
    with pytest.raises(InputError, match="no role named 'nosuchrole'"):
        load_project(project_copy)


def test_two_services_on_one_port_of_one_node(project_copy: Path, edit_yaml: Callable) -> None:
    book = project_copy / "playbooks/ai-swarm.yml"
    edit_yaml(book, lambda d: _phase(d, "thanos")["services"].append(
        {"name": "redis-two", "role": "redis", "host": "thanos", "vars": {"port": 8080}}))
    with pytest.raises(InputError) as err:  # render refuses it too, not only plan
        make_plan(load_project(project_copy))
    assert "ai-swarm.yml:" in str(err.value) and "phases[4].services[7]" in str(err.value)
    assert "redis-two publishes port 8080/tcp on thanos, which sillytavern already publishes" in str(err.value)


def test_undefined_template_variable_names_template_and_line(project_copy: Path) -> None:
    tpl = project_copy / "roles/haproxy/haproxy.cfg.j2"
    lines = tpl.read_text().splitlines()
    lines.insert(3, "    maxconn {{ no_such_variable }}")
    tpl.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        render_fleet(load_project(project_copy))
    assert "haproxy.cfg.j2:4" in str(err.value)
    assert "no_such_variable" in str(err.value)


def test_undefined_variable_in_role_file_names_role_and_key(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / "roles/grafana/role.yml", lambda d: d["env"].update({"X": "{{ missing_thing }}"}))
    with pytest.raises(InputError) as err:
        render_fleet(load_project(project_copy))
    assert "roles/grafana/role.yml" in str(err.value) and "env.X" in str(err.value)
    assert "missing_thing" in str(err.value)


def test_secret_used_but_not_declared(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / "roles/grafana/role.yml", lambda d: d["secret_env"].update({"GF_X": "undeclared_secret"}))
    with pytest.raises(InputError) as err:
        load_project(project_copy)
    assert "roles/grafana/role.yml" in str(err.value)
    assert "secret_env.GF_X: secret 'undeclared_secret' is used but not declared" in str(err.value)


def test_secret_inside_template_env_must_be_declared(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / "roles/litellm/role.yml",
              lambda d: d["secret_env"].update({"URL": "x://{{ secrets.nope_pw }}@h"}))
    with pytest.raises(InputError, match="secret 'nope_pw' is used but not declared"):
        load_project(project_copy)


def test_unknown_key_in_role(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / "roles/redis/role.yml", lambda d: d.update({"restart_policy": "always"}))
    with pytest.raises(InputError) as err:
        load_project(project_copy)
    assert "roles/redis/role.yml:" in str(err.value) and "restart_policy: unknown key" in str(err.value)


def test_root_without_reason_is_refused(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / "roles/grafana/role.yml", lambda d: d.update({"user": None}))
    with pytest.raises(InputError, match="runs as root without a root_reason"):
        load_project(project_copy)


def test_unknown_phase_is_input_error(project_copy: Path) -> None:
    project = load_project(project_copy)
    with pytest.raises(InputError, match="no phase 9"):
        project.playbook.phase(9)


def test_inventory_service_vars_for_unknown_service(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["thanos"].setdefault("services", {}).update({"vllm-ghost": {"model": "x"}}))
    with pytest.raises(InputError, match="nodes.thanos.services.vllm-ghost: no service named"):
        load_project(project_copy)


def test_missing_required_var(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml", lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"].pop("model"))
    with pytest.raises(InputError, match="vllm-backup.*needs vars: model"):
        render_fleet(load_project(project_copy))


def test_duplicate_service_name(project_copy: Path, edit_yaml: Callable) -> None:
    edit_yaml(project_copy / "playbooks/ai-swarm.yml",
              lambda d: _phase(d, "thanos")["services"].append({"name": "redis", "role": "redis", "host": "thanos"}))
    with pytest.raises(InputError, match="service 'redis' is defined twice"):
        load_project(project_copy)
