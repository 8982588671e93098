"""The reference fleet's optional phase 5 (overflow) on a fourth lab node: the lab is the
reference fleet's shape plus `overflow`, every phase is deployed in order (5 included, as
the demo does), and the overflow host's services answer as their users would see them.

One lab and one deploy for the module (~3 min on 2 cores: 4-node lab ~15 s, phase 1 ~15 s,
phases 2-5 ~2.5 min, verify of phase 5 ~10 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.lab import api
from tests.integration.shaped import client, deploy_example, node_sh, verify_passes

pytestmark = [pytest.mark.lab, pytest.mark.lab_shape]


@pytest.fixture(scope="module")
def with_overflow(shaped_labs: None) -> Iterator[api.Lab]:
    yield deploy_example("reference", ["oracle", "starlord", "thanos", "overflow"])


def test_phase_5_runs_on_the_fourth_node(with_overflow: api.Lab) -> None:
    overflow = with_overflow.nodes["overflow"]
    with client() as http:
        assert http.get(f"http://{overflow}:4000/health/liveliness").status_code == 200  # backup-router
        assert http.get(f"http://{overflow}:3002/api/health").status_code == 200        # analytics
        assert http.get(f"http://{overflow}:8001/").status_code == 200                   # research-worker
    pong = node_sh(with_overflow, "overflow", "docker", "exec", "swarm-overflow-redis-cache-1",
                   "redis-cli", "ping")
    assert pong.strip() == "PONG"
    verify_passes(with_overflow, "reference", "--phase", "5")
