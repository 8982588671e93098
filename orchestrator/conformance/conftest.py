"""Plain pytest runs of the checks: say how to load their plugin, which holds the options,
the parametrization and the `swarm` fixture (`swarm verify` runs with --noconftest, so the
checks need nothing from a conftest).

Run with the plugin loaded: `pytest -p orchestrator.conformance.plugin --pyargs
orchestrator.conformance --swarm-inventory FILE`.
"""

from __future__ import annotations

import pytest

PLUGIN = "orchestrator.conformance.plugin"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        raise pytest.UsageError(f"the swarm conformance checks need their plugin: add -p {PLUGIN}")
