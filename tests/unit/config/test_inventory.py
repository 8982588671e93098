"""Inventory loading: typed nodes, Ansible-style var merging, and errors that name file, line and path."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config.inventory import load_inventory
from orchestrator.errors import InputError

REPO = Path(__file__).resolve().parents[3]


def test_shipped_inventory_has_the_reference_fleet() -> None:
    inv = load_inventory(REPO / "inventory/swarm.yml")
    assert set(inv.nodes) == {"oracle", "starlord", "thanos", "overflow"}
    assert inv.node("oracle").arch == "arm64"
    starlord = inv.node("starlord")
    assert starlord.address == "100.72.73.3"
    assert starlord.gpus[0].vram_mib == 24564 and starlord.spec.ram_gb == 64
    assert starlord.is_protected("qdrant")
    assert inv.node("thanos").gpus[0].model.endswith("RTX 3080")
    assert inv.node("overflow").spec.optional


def test_vars_merge_fleet_then_group_then_host(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(
        "vars: {a: fleet, b: fleet, c: fleet}\n"
        "groups: {gpu: {hosts: [n1], vars: {b: group, c: group}}}\n"
        "nodes:\n  n1: {address: 198.18.0.5, vars: {c: host}}\n  n2: {address: 198.18.0.6}\n"
    )
    inv = load_inventory(path)
    assert inv.node("n1").vars == {"a": "fleet", "b": "group", "c": "host"}
    assert inv.node("n2").vars == {"a": "fleet", "b": "fleet", "c": "fleet"}
    assert inv.node("n1").groups == ("gpu",)


def test_per_node_ssh_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text("ssh: {user: ops, port: 2222}\nnodes:\n  a: {address: h1, ssh: {port: 22}}\n  b: {address: h2}\n")
    inv = load_inventory(path)
    assert (inv.node("a").ssh.user, inv.node("a").ssh.port) == ("ops", 22)
    assert inv.node("b").ssh.port == 2222


def test_limit_accepts_nodes_and_groups_and_rejects_unknown() -> None:
    inv = load_inventory(REPO / "inventory/swarm.yml")
    assert [n.name for n in inv.select("gpu")] == ["starlord", "thanos"]
    assert [n.name for n in inv.select("oracle,thanos")] == ["oracle", "thanos"]
    with pytest.raises(InputError, match="no node or group named 'nope'"):
        inv.select("nope")


def test_arch_aliases_from_uname_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text("nodes:\n  a: {address: h, arch: aarch64}\n  b: {address: h2, arch: x86_64}\n")
    inv = load_inventory(path)
    assert inv.node("a").platform == "linux/arm64" and inv.node("b").platform == "linux/amd64"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodes:\n  a:\n    address: h\n    gpus:\n      - {model: x, vram_mib: 24GB}\n",
         ':5: nodes.a.gpus[0].vram_mib: expected a number, got "24GB"'),
        ("nodes:\n  a:\n    address: h\n    colour: red\n", ":4: nodes.a.colour: unknown key"),
        ("nodes:\n  a:\n    arch: sparc\n    address: h\n", ":3: nodes.a.arch:"),
        ("nodes:\n  a: {address: h}\ngroups:\n  g: {hosts: [a, ghost]}\n", ":4: groups.g.hosts[1]: no node named 'ghost'"),
        ("nodes:\n  a: {address: h\n", "YAML syntax error"),
        ("nodes:\n  a: {address: h}\n  a: {address: i}\n", "duplicate key 'a'"),
        ("- just\n- a list\n", "must be a mapping at the top level"),
        ("nodes: {}\n", "nodes:"),
        ("nodes:\n  A_Bad: {address: h}\n", "names use lowercase"),
        ("ssh: {port: 99999}\nnodes:\n  a: {address: h}\n", ":1: ssh.port:"),
    ],
)
def test_bad_inventory_names_file_line_and_path(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_inventory(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)
    assert err.value.exit_code == 2


def test_yaml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("nodes:\n  a:\n    address: [unclosed\n  b: {}\n")
    with pytest.raises(InputError, match=r"bad\.yml:\d+: YAML syntax error"):
        load_inventory(path)


def test_missing_inventory_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="inventory not found"):
        load_inventory(tmp_path / "nope.yml")
