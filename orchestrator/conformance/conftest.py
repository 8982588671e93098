"""Fixtures of the conformance tests; options and parametrization live in `plugin.py`.

Run with the plugin loaded: `pytest -p orchestrator.conformance.plugin --pyargs
orchestrator.conformance --swarm-inventory FILE` (what `swarm verify` does).
"""

from __future__ import annotations

import pytest

from orchestrator.conformance.plugin import Conformance, context

PLUGIN = "orchestrator.conformance.plugin"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        raise pytest.UsageError(f"the swarm conformance checks need their plugin: add -p {PLUGIN}")


@pytest.fixture(scope="session")
def swarm(request: pytest.FixtureRequest) -> Conformance:
    """The fleet context: scope, one testinfra host per node, facts cached per node."""
    return context(request.config)
