"""A lab in the shape of any project's inventory: node names, arch, GPUs, Vault/Consul's node."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.lab import inventory, layout

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p.name for p in (REPO / "examples").iterdir() if (p / "inventory/swarm.yml").is_file())


def _source(name: str) -> dict:  # type: ignore[type-arg]
    data = inventory.load_source(REPO / "examples" / name / "inventory" / "swarm.yml")
    assert data is not None
    return data


def test_the_reference_fleet_still_gives_the_three_node_lab() -> None:
    source = inventory.load_source(REPO / "inventory" / "swarm.yml")
    assert inventory.node_names(source) == ["oracle", "starlord", "thanos"]  # overflow is optional


def test_an_example_lab_has_the_example_nodes_with_their_cards(tmp_path: Path) -> None:
    source = _source("gateway")
    names = inventory.node_names(source)
    assert names == ["edge", "gpu"]
    specs = inventory.apply_facts(source, layout.parse_nodes_option(",".join(names), light=False))
    assert [s.name for s in specs] == ["edge", "gpu"]
    assert specs[1].gpus == (layout.Gpu("NVIDIA GeForce RTX 4090", 24564),) and specs[0].gpus == ()
    out = inventory.rewrite(source, specs, layout.LabPaths(tmp_path))
    edge = out["nodes"]["edge"]["address"]
    assert out["vault"]["addr"] == f"http://{edge}:8200" and out["consul"]["addr"] == f"http://{edge}:8500"
    assert all(layout.is_lab_address(n["address"]) for n in out["nodes"].values())
    assert out["nodes"]["gpu"]["services"]["model-a"]["served_model_name"] == "coder"  # facts kept


def test_vault_lands_where_the_inventory_puts_it(tmp_path: Path) -> None:
    source = {"vault": {"addr": "http://10.0.0.2:8200"}, "consul": {"addr": "http://10.0.0.3:8500"},
              "nodes": {"a": {"address": "10.0.0.1"}, "b": {"address": "10.0.0.2"},
                        "c": {"address": "10.0.0.3"}}}
    specs = layout.parse_nodes_option("a,b,c", light=False)
    out = inventory.rewrite(source, specs, layout.LabPaths(tmp_path))
    assert out["vault"]["addr"] == f"http://{out['nodes']['b']['address']}:8200"
    assert out["consul"]["addr"] == f"http://{out['nodes']['c']['address']}:8500"


def test_arm64_nodes_stay_arm64() -> None:
    source = {"nodes": {"pi": {"address": "10.0.0.9", "arch": "arm64"}}}
    specs = inventory.apply_facts(source, layout.parse_nodes_option("pi", light=False))
    assert specs[0].arch == "arm64" and specs[0].platform == "linux/arm64"


def test_overflow_joins_when_named(tmp_path: Path) -> None:
    source = inventory.load_source(REPO / "inventory" / "swarm.yml")
    specs = inventory.apply_facts(source, layout.parse_nodes_option("oracle,starlord,thanos,overflow", False))
    out = inventory.rewrite(source, specs, layout.LabPaths(tmp_path))
    assert out["nodes"]["overflow"]["address"] == "198.18.1.4"
    assert "optional" not in out["nodes"]["overflow"]  # the lab runs it, so phase 5 deploys there


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_has_a_lab_shape(name: str) -> None:
    names = inventory.node_names(_source(name))
    assert names
    specs = layout.parse_nodes_option(",".join(names), light=False)
    assert len({s.address for s in specs}) == len(specs)
