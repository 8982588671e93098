"""A rollback or restore masks every secret of the fleet, not only the ones it sends.

Its gate may show a failed service's logs; an application that logs its database password
(LiteLLM's DATABASE_URL, say) would put it in the CLI, the JSON output and the audit log
unless the scrub registry knows it. Driven through the Vault stand-in with the real hvac.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
import yaml

from orchestrator.config.project import load_project
from orchestrator.engine.rollback import bearer_secrets
from orchestrator.events import EventBus, JsonRenderer
from orchestrator.lab.standins import vault as standin
from orchestrator.render.services import build_services
from orchestrator.secrets import MASK, scrub

ROOT = "root-token-for-gates"


@pytest.fixture
def vault() -> Iterator[standin.StandinServer]:
    srv = standin.serve("127.0.0.1", 0, root_token=ROOT)
    yield srv
    srv.shutdown()


def _project(root: Path, vault: standin.StandinServer, tmp_path: Path) -> Path:
    token = tmp_path / "token"
    token.write_text(ROOT)
    token.chmod(0o600)
    inv = root / "inventory/swarm.yml"
    data = yaml.safe_load(inv.read_text())
    data["vault"].update(addr=vault.url, token_file=str(token))
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def test_a_rollback_gate_masks_the_database_password_it_never_sends(project_copy: Path, tmp_path: Path,
                                                                    vault: standin.StandinServer, capsys) -> None:
    password = f"pg-{secrets.token_hex(8)}"
    client = hvac.Client(url=vault.url, token=ROOT)
    client.secrets.kv.v2.create_or_update_secret(path="ai-swarm/postgres", secret={"password": password})
    client.secrets.kv.v2.create_or_update_secret(path="ai-swarm/vllm", secret={"api_key": "k-" + secrets.token_hex(8)})
    project = load_project(_project(project_copy, vault, tmp_path))
    control_plane = [s for s in build_services(project) if s.phase == 2]   # no probe sends a key
    assert not any(p.bearer_secret for s in control_plane for p in s.probes)

    keys = asyncio.run(bearer_secrets(project, control_plane))

    assert keys == {}
    log_line = f"litellm: connecting to postgresql://litellm:{password}@postgres:5432/litellm"
    assert password not in scrub(log_line) and MASK in scrub(log_line)
    bus = EventBus()
    bus.subscribe(JsonRenderer())
    bus.emit("gate", "failed", host="oracle", message=log_line)
    assert password not in capsys.readouterr().out


def test_vault_down_does_not_stop_a_rollback_gate(project_copy: Path, tmp_path: Path,
                                                   vault: standin.StandinServer) -> None:
    project = load_project(_project(project_copy, vault, tmp_path))
    vault.shutdown()
    control_plane = [s for s in build_services(project) if s.phase == 2]
    assert asyncio.run(bearer_secrets(project, control_plane)) == {}
