"""Address plan and node specs of the lab."""

from __future__ import annotations

import ipaddress

import pytest

from orchestrator.errors import InputError
from orchestrator.lab import layout


def test_reference_nodes_keep_their_numbers_whatever_the_subset() -> None:
    specs = layout.parse_nodes_option("thanos,oracle", light=False)
    assert {s.name: s.address for s in specs} == {"thanos": "198.18.1.3", "oracle": "198.18.1.1"}


def test_reference_facts() -> None:
    oracle, starlord, thanos = layout.parse_nodes_option(None, light=False)
    assert (oracle.arch, oracle.gpus) == ("arm64", ())
    assert starlord.gpus[0] == layout.Gpu("NVIDIA GeForce RTX 4090", 24564)
    assert thanos.gpus[0].memory_mib == 10240


def test_other_names_take_free_numbers() -> None:
    specs = layout.parse_nodes_option("oracle,extra,more", light=False)
    assert [s.number for s in specs] == [1, 5, 6]


def test_light_count_gives_distinct_lab_addresses() -> None:
    specs = layout.parse_nodes_option("300", light=True)
    addresses = [s.address for s in specs]
    assert len(set(addresses)) == 300
    assert specs[0].name == "light-001" and specs[-1].name == "light-300"
    for address in addresses:
        ip = ipaddress.ip_address(address)
        assert ip in ipaddress.ip_network("198.18.0.0/16")
        assert not address.endswith((".0", ".255")) and address != layout.BRIDGE_ADDRESS


def test_docker_ranges_stay_in_198_19_and_do_not_overlap() -> None:
    specs = layout.parse_nodes_option("32", light=False)
    nets = [ipaddress.ip_network(s.docker_bip, strict=False) for s in specs]
    pools = [ipaddress.ip_network(s.docker_pool.split(",")[0].removeprefix("base="))
             for s in specs]
    compose = ipaddress.ip_network(layout.COMPOSE_SUBNET)
    everything = nets + pools + [compose]
    for net in everything:
        assert net.subnet_of(ipaddress.ip_network("198.19.0.0/16"))
    for i, a in enumerate(everything):
        for b in everything[i + 1:]:
            assert not a.overlaps(b)


@pytest.mark.parametrize("value", ["x; rm -rf /", "a b", "ünï", "", "oracle,oracle",
                                   "averyveryverylongname"])
def test_hostile_or_bad_names_are_refused(value: str) -> None:
    with pytest.raises(InputError):
        layout.parse_nodes_option(value + ("," if not value else ""), light=False)


def test_too_many_engines_is_an_input_error() -> None:
    with pytest.raises(InputError, match="--light"):
        layout.parse_nodes_option("40", light=False)


def test_lab_address_predicate() -> None:
    assert layout.is_lab_address("198.19.200.1")
    assert layout.is_lab_address("127.0.0.1/8")
    assert not layout.is_lab_address("172.17.0.1")
    assert not layout.is_lab_address("100.96.197.84")


def test_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWARM_LAB_DIR", str(tmp_path))
    assert layout.LabPaths().key == tmp_path / "id_ed25519"
