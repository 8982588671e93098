"""SshTarget from the inventory: every node's ssh block, paths resolved."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config.inventory import load_inventory
from orchestrator.transport.ssh import target_for

SHIPPED = Path(__file__).parents[3] / "inventory" / "swarm.yml"


def test_every_shipped_node_gets_a_resolved_target() -> None:
    inventory = load_inventory(SHIPPED)
    for node in inventory.nodes.values():
        target = target_for(inventory, node)
        assert (target.name, target.address) == (node.name, node.address)
        assert (target.user, target.port) == (node.ssh.user, node.ssh.port)
        assert target.key is None or target.key.is_absolute()
        assert target.known_hosts is None or target.known_hosts.is_absolute()
        assert target.command_timeout == node.ssh.command_timeout
