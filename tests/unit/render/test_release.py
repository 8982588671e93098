"""Release content: env files 0600 with literal values, stable hashes, masked diffs."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from orchestrator.config.project import load_project
from orchestrator.engine.steps import audit_line
from orchestrator.errors import InputError
from orchestrator.render.fleet import render_fleet
from orchestrator.render.release import build_release, env_file_body, tarball
from orchestrator.secrets import Secret

REPO = Path(__file__).resolve().parents[3]
SECRETS = {name: Secret(f"value-of-{name}-$HOME-`x`", name) for name in (
    "postgres_password", "redis_password", "litellm_master_key", "litellm_salt_key", "vllm_api_key",
    "webui_secret_key", "grafana_admin_password", "openrouter_api_key", "brave_api_key", "hf_token",
    "sentry_dsn")}


@pytest.fixture(scope="module")
def fleet():
    return render_fleet(load_project(REPO), for_node=True)


def test_env_file_carries_secret_literally_and_composes_templates(fleet) -> None:
    litellm = fleet.service("litellm")
    body = env_file_body(litellm, SECRETS).decode()
    assert "LITELLM_MASTER_KEY='value-of-litellm_master_key-$HOME-`x`'" in body
    assert "LITELLM_DB_URL='postgresql://litellm:value-of-postgres_password-$HOME-`x`@postgres:5432/litellm'" in body


def test_env_file_refuses_values_it_cannot_carry(fleet) -> None:
    bad = {**SECRETS, "vllm_api_key": Secret("ab\x00cd-secret", "vllm_api_key")}
    with pytest.raises(InputError, match="VLLM_API_KEY .from secret vllm_api_key. holds a control character") as err:
        env_file_body(fleet.service("vllm-primary"), bad)
    assert "cd-secret" not in str(err.value)


def test_env_file_quotes_what_single_quotes_cannot_carry(fleet) -> None:
    odd = {**SECRETS, "vllm_api_key": Secret("it's a \\ \"$HOME\"\n", "vllm_api_key")}
    body = env_file_body(fleet.service("vllm-primary"), odd).decode()
    assert 'VLLM_API_KEY="it\'s a \\\\ \\"\\$HOME\\"\\n"' in body


def test_template_modes_reach_the_tarball(project_copy: Path) -> None:
    role = project_copy / "roles/redis/role.yml"
    role.write_text(role.read_text().replace("{src: redis.conf.j2, dest: redis.conf}",
                                             '{src: redis.conf.j2, dest: redis.conf, mode: "0640"}'))
    node = render_fleet(load_project(project_copy), for_node=True).nodes["oracle"]
    content = build_release(node, SECRETS)
    with tarfile.open(fileobj=io.BytesIO(tarball(content, "x", {}))) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes[".tmp-x/config/redis/redis.conf"] == 0o640
    assert [m for n, m in modes.items() if n.startswith(".tmp-x.store/redis/")] == [0o640]
    assert modes[".tmp-x/config/haproxy/haproxy.cfg"] == 0o644


def test_missing_secret_names_the_service(fleet) -> None:
    partial = {k: v for k, v in SECRETS.items() if k != "vllm_api_key"}
    with pytest.raises(InputError, match="vllm-primary needs secret 'vllm_api_key'"):
        env_file_body(fleet.service("vllm-primary"), partial)


def test_tarball_has_env_files_0600_and_the_config_store(fleet) -> None:
    content = build_release(fleet.nodes["oracle"], SECRETS)
    data = tarball(content, "R1", {"id": "R1", "applied": {"haproxy": "abc", "vault": "def"}})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        applied = tar.extractfile(".tmp-R1/applied.txt").read().decode()  # type: ignore[union-attr]
    assert members[".tmp-R1/env/litellm.env"].mode == 0o600
    assert members[".tmp-R1/compose.yml"].mode == 0o644
    assert any(name.startswith(".tmp-R1.store/haproxy/") and name.endswith("haproxy.cfg") for name in members)
    assert ".tmp-R1/release.json" in members
    assert applied == "haproxy abc\nvault def\n"  # what the run's first command greps


def test_hashes_change_only_for_the_service_whose_secret_changed(fleet) -> None:
    a = build_release(fleet.nodes["oracle"], SECRETS)
    b = build_release(fleet.nodes["oracle"], {**SECRETS, "grafana_admin_password": Secret("rotated", "g")})
    changed = {s for s in a.service_hashes if a.service_hashes[s] != b.service_hashes[s]}
    assert changed == {"grafana"}
    assert a.hash != b.hash
    assert build_release(fleet.nodes["oracle"], SECRETS).hash == a.hash


def test_public_files_leave_env_out(fleet) -> None:
    content = build_release(fleet.nodes["starlord"], SECRETS)
    assert "env/vllm-primary.env" in content.files
    assert not any(p.startswith("env/") for p in content.public_files())


def test_audit_line_is_scrubbed() -> None:
    secret = Secret("super-secret-audit-value", "x")
    line = audit_line("n1", "deploy", 2, "me@host", note=f"oops {secret.reveal()}").decode()
    assert "super-secret-audit-value" not in line and "********" in line
