"""Rewriting the fleet inventory onto the lab."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.lab import inventory, layout

REPO = Path(__file__).resolve().parents[3]


def _source() -> dict:  # type: ignore[type-arg]
    data = inventory.load_source(REPO / "inventory" / "swarm.yml")
    assert data is not None
    return data


def test_rewrite_moves_fleet_onto_lab(tmp_path: Path) -> None:
    paths = layout.LabPaths(tmp_path)
    specs = layout.parse_nodes_option("oracle,starlord,thanos", light=False)
    out = inventory.rewrite(_source(), specs, paths)
    assert list(out["nodes"]) == ["oracle", "starlord", "thanos", "overflow"]
    assert out["nodes"]["overflow"]["optional"] is True  # kept, switched off
    assert out["nodes"]["overflow"]["address"] == "198.18.1.4"
    assert out["nodes"]["starlord"]["address"] == "198.18.1.2"
    assert out["nodes"]["starlord"]["protected"] == ["qdrant"]  # facts kept
    assert out["ssh"]["key"] == str(paths.key)
    assert out["ssh"]["known_hosts"] == str(paths.known_hosts)
    assert out["ssh"]["user"] == "swarm" and out["ssh"]["port"] == 22
    assert out["registry"] == {"mirror": "198.18.0.1:5000", "insecure": True}
    assert out["vault"]["addr"] == "http://198.18.1.1:8200"
    assert out["vault"]["mount"] == "secret"
    assert out["consul"]["addr"] == "http://198.18.1.1:8500"
    assert out["network"]["subnet"] == layout.COMPOSE_SUBNET
    assert out["groups"]["cloud"]["hosts"] == ["overflow"]
    assert out["groups"]["gpu"]["hosts"] == ["starlord", "thanos"]


def test_every_address_in_the_lab_inventory_is_a_lab_address(tmp_path: Path) -> None:
    specs = layout.parse_nodes_option(None, light=False)
    out = inventory.rewrite(_source(), specs, layout.LabPaths(tmp_path))
    for node in out["nodes"].values():
        assert layout.is_lab_address(node["address"])
    text = yaml.safe_dump(out)
    for forbidden in ("100.96.197.84", "100.72.73.3", "100.122.12.54", "172.20.0.0"):
        assert forbidden not in text


def test_non_optional_nodes_outside_the_lab_are_dropped(tmp_path: Path) -> None:
    source = {"nodes": {"a": {"address": "10.0.0.1"}, "b": {"address": "10.0.0.2"}},
              "groups": {"g": {"hosts": ["a", "b"]}}}
    out = inventory.rewrite(source, layout.parse_nodes_option("a", False), layout.LabPaths(tmp_path))
    assert list(out["nodes"]) == ["a"] and out["groups"]["g"]["hosts"] == ["a"]


def test_source_is_not_mutated(tmp_path: Path) -> None:
    source = _source()
    before = yaml.safe_dump(source)
    inventory.rewrite(source, layout.parse_nodes_option("oracle", light=False),
                      layout.LabPaths(tmp_path))
    assert yaml.safe_dump(source) == before


def test_without_source_a_minimal_inventory_is_written(tmp_path: Path) -> None:
    specs = layout.parse_nodes_option("starlord", light=False)
    out = inventory.rewrite(None, specs, layout.LabPaths(tmp_path))
    assert out["nodes"]["starlord"]["gpus"] == [{"model": "NVIDIA GeForce RTX 4090",
                                                 "vram_mib": 24564}]
    assert out["vault"]["addr"] == "http://198.18.1.2:8200"


def test_light_inventory(tmp_path: Path) -> None:
    specs = layout.parse_nodes_option("3", light=True)
    out = inventory.light(specs, layout.LabPaths(tmp_path))
    assert out["nodes"]["light-02"] == {"address": "198.18.1.2", "arch": "amd64"}
    assert out["groups"]["light"]["hosts"] == ["light-01", "light-02", "light-03"]


def test_facts_from_inventory_drive_specs() -> None:
    source = {"nodes": {"starlord": {"arch": "arm64",
                                     "gpus": [{"model": "X", "vram_mib": 8192}]}}}
    (spec,) = inventory.apply_facts(source, layout.parse_nodes_option("starlord", False))
    assert spec.arch == "arm64" and spec.gpus == (layout.Gpu("X", 8192),)


def test_written_file_round_trips(tmp_path: Path) -> None:
    data = inventory.light(layout.parse_nodes_option("2", light=True), layout.LabPaths(tmp_path))
    inventory.write(data, tmp_path / "inv.yml")
    assert yaml.safe_load((tmp_path / "inv.yml").read_text()) == data


def test_lab_inventories_load_with_the_fleet_loader(tmp_path: Path) -> None:
    from orchestrator.config.inventory import load_inventory

    paths = layout.LabPaths(tmp_path)
    full = inventory.rewrite(_source(), layout.parse_nodes_option(None, False), paths)
    inventory.write(full, tmp_path / "full.yml")
    loaded = load_inventory(tmp_path / "full.yml")
    assert loaded is not None
    light = inventory.light(layout.parse_nodes_option("5", light=True), paths)
    inventory.write(light, tmp_path / "light.yml")
    assert load_inventory(tmp_path / "light.yml") is not None


def test_lab_vars_name_the_lab_networks_and_what_it_cannot_run(tmp_path: Path) -> None:
    """The allowlist admits only the controller, the "tailnet" is the lab net, LiteLLM runs
    without its database; every other fleet var is kept."""
    out = inventory.rewrite(_source(), layout.parse_nodes_option(None, False), layout.LabPaths(tmp_path))
    assert out["vars"]["allowed_ips"] == [layout.BRIDGE_ADDRESS, "127.0.0.1"]
    assert out["vars"]["tailnet_cidr"] == "198.18.0.0/15"
    assert out["vars"]["use_database"] is False
    assert out["vars"]["timezone"] == _source()["vars"]["timezone"]


def test_lab_render_has_the_lab_allowlist_and_no_litellm_database(tmp_path: Path) -> None:
    """What the lab deploys: HAProxy's ACL lists the controller; LiteLLM's config names no
    database and its env file has no DATABASE_URL (both would need Prisma's engines)."""
    from orchestrator.config.project import load_project
    from orchestrator.render.fleet import render_fleet

    paths = layout.LabPaths(tmp_path)
    inventory.write(inventory.rewrite(_source(), layout.parse_nodes_option(None, False), paths),
                    tmp_path / "lab.yml")
    fleet = render_fleet(load_project(REPO, tmp_path / "lab.yml"))
    files = fleet.nodes["oracle"].files
    assert "acl allowed_client src 198.18.0.1 127.0.0.1" in files["config/haproxy/haproxy.cfg"].decode()
    litellm = yaml.safe_load(files["config/litellm/config.yaml"])
    assert "database_url" not in litellm["general_settings"]
    service = next(s for s in fleet.all_services() if s.name == "litellm")
    assert "DATABASE_URL" not in service.secret_env
    assert "host    all       all   198.18.0.0/15" in files["config/postgres/pg_hba.conf"].decode()
