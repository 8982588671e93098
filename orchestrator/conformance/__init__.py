"""Conformance: is the fleet what the inventory, playbook and roles say? (`swarm verify`)

The checks are ordinary pytest-testinfra tests (`test_node.py`, `test_services.py`,
`test_fleet.py`), generated from the same project a deploy uses: one test case per check
and node (or node:service). They run with `swarm verify` or with plain pytest:

    pytest -p orchestrator.conformance.plugin --pyargs orchestrator.conformance \
        --swarm-inventory inventory/swarm.yml [--connection ssh] [-n 3 --dist loadgroup]

Each node is one testinfra host (paramiko by default) built once per session from the
inventory's ssh block, with host keys checked against its known_hosts. What a node runs
is read in one batched command per node and cached (`facts.py`); the checks themselves
are pure functions (`checks.py`) that return the problems they find.
"""
