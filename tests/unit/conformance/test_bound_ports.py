"""A port the role binds to the node's address must be published there and only there."""

from __future__ import annotations

from orchestrator.conformance import checks
from orchestrator.render.services import Port


def container(*bindings: tuple[str, str]) -> dict:
    return {"Name": "/swarm-oracle-vault-1",
            "HostConfig": {"PortBindings": {"8200/tcp": [{"HostIp": ip, "HostPort": port} for ip, port in bindings]}}}


BOUND = (Port(port=8200, target=8200, host_ip="198.18.1.1"),)


def test_published_on_the_bound_address_conforms() -> None:
    assert checks.port_problems(BOUND, container(("198.18.1.1", "8200"))) == []


def test_published_on_every_address_is_drift() -> None:
    assert checks.port_problems(BOUND, container(("", "8200"))) == [
        "swarm-oracle-vault-1 publishes 8200/tcp on all addresses, not only on 198.18.1.1"]


def test_unbound_port_must_still_be_on_all_addresses() -> None:
    problems = checks.port_problems((Port(port=8200, target=8200),), container(("198.18.1.1", "8200")))
    assert problems == ["swarm-oracle-vault-1 publishes 8200/tcp only on 198.18.1.1, not on all addresses"]
