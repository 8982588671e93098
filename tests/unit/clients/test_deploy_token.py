"""`swarm vault init` makes a deploy token limited to the fleet's KV paths, so deploys and
`secrets push` never need the root token (which stays in the key file, offline); `vault
unseal` verifies Vault with the inventory's CA. Through the Vault stand-in and real hvac."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.clients.secrets_source import SecretSource
from orchestrator.config.project import load_project
from orchestrator.lab.standins import vault as standin


@pytest.fixture
def fresh_vault() -> Iterator[standin.StandinServer]:
    srv = standin.serve("127.0.0.1", 0, dev=False)  # uninitialised, as `vault server -config`
    yield srv
    srv.shutdown()


def _point_at(root: Path, url: str, **vault: str) -> None:
    inv = root / "inventory/swarm.yml"
    data = yaml.safe_load(inv.read_text())
    data["vault"].update(addr=url, **vault)
    inv.write_text(yaml.safe_dump(data, sort_keys=False))


def _swarm(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--project", str(root), *args])
    return result.exit_code, result.output


def test_vault_init_writes_a_deploy_token_that_reaches_only_the_fleet_s_secrets(
        project_copy: Path, tmp_path: Path, fresh_vault: standin.StandinServer) -> None:
    keys, token_file = tmp_path / "vault-keys.json", tmp_path / "vault-token"
    _point_at(project_copy, fresh_vault.url, token_file=str(token_file))
    code, out = _swarm(project_copy, "vault", "init", "--key-file", str(keys))
    assert code == 0, out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    root_token = json.loads(keys.read_text())["root_token"]
    deploy_token = token_file.read_text().strip()
    assert deploy_token and deploy_token != root_token and deploy_token not in out

    env = tmp_path / "secrets.env"
    env.write_text("POSTGRES_PASSWORD=pg-pass-1\nREDIS_PASSWORD=redis-pass-1\n")
    code, out = _swarm(project_copy, "secrets", "push", "--env-file", str(env))
    assert code == 0, out           # pushed with the deploy token (the inventory's token_file)
    source = SecretSource.from_project(load_project(project_copy))
    assert source.read({"postgres_password"})["postgres_password"].reveal() == "pg-pass-1"

    limited = hvac.Client(url=fresh_vault.url, token=deploy_token)
    assert "root" not in limited.auth.token.lookup_self()["data"]["policies"]
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.secrets.kv.v2.read_secret_version(path="other-fleet/db", mount_point="secret",
                                                   raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.sys.list_mounted_secrets_engines()

    code, out = _swarm(project_copy, "vault", "init", "--key-file", str(keys))   # again: the token is kept
    assert code == 0 and token_file.read_text().strip() == deploy_token, out


def test_the_deploy_token_never_shares_the_key_file(project_copy: Path, tmp_path: Path,
                                                     fresh_vault: standin.StandinServer) -> None:
    keys = tmp_path / "vault-keys.json"
    _point_at(project_copy, fresh_vault.url)
    code, out = _swarm(project_copy, "vault", "init", "--key-file", str(keys), "--token-file", str(keys))
    assert code == 2 and "cannot share the key file" in out


def test_vault_unseal_verifies_with_the_inventory_ca(project_copy: Path, tmp_path: Path) -> None:
    """An https Vault whose CA is in the inventory: unseal must use it (a missing CA file is
    the error that shows it is read), not the system store."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"unseal_keys_hex": ["k"], "root_token": "r"}))
    keys.chmod(0o600)
    _point_at(project_copy, "https://127.0.0.1:1", ca_cert=str(tmp_path / "no-such-ca.pem"))
    code, out = _swarm(project_copy, "vault", "unseal", "--key-file", str(keys))
    assert code == 2 and "vault.ca_cert" in out and "no-such-ca.pem" in out, out


def test_the_deploy_token_lists_and_checks_the_fleet_s_secrets(project_copy: Path, tmp_path: Path,
                                                                fresh_vault: standin.StandinServer) -> None:
    keys, token_file = tmp_path / "vault-keys.json", tmp_path / "vault-token"
    _point_at(project_copy, fresh_vault.url, token_file=str(token_file))
    assert _swarm(project_copy, "vault", "init", "--key-file", str(keys))[0] == 0
    env = tmp_path / "secrets.env"
    env.write_text("REDIS_PASSWORD=redis-pass-2\n")
    assert _swarm(project_copy, "secrets", "push", "--env-file", str(env))[0] == 0
    code, out = _swarm(project_copy, "secrets", "list")
    assert code == 0 and "redis" in out and "redis-pass-2" not in out, out
    code, out = _swarm(project_copy, "secrets", "check")
    assert code == 1 and "postgres_password" in out and "permission" not in out, out
