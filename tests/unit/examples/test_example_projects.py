"""The example projects as rendered: what each seed document asks is in the compose project."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config.project import load_project, roles_search_path
from orchestrator.render.fleet import render_fleet
from orchestrator.render.plan import make_plan
from orchestrator.render.release import env_file_body
from orchestrator.render.services import build_services
from orchestrator.secrets import Secret

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if (p / "inventory/swarm.yml").is_file())


@pytest.mark.parametrize("root", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads_plans_and_uses_the_shared_roles(root: Path) -> None:
    project = load_project(root)
    assert not make_plan(project).problems
    assert roles_search_path(root) == (root / "roles", REPO / "roles")
    shared = {name for name, role in project.roles.items() if role.dir.parent == REPO / "roles"}
    assert {"vault", "consul"} <= shared  # reused, not copied
    assert not any((root / "roles" / name).exists() for name in shared)


def test_vllm_server_is_the_documents_server() -> None:
    project = load_project(REPO / "examples/vllm-server")
    coder = next(s for s in build_services(project) if s.name == "coder")
    command = coder.compose["command"]
    for flag, value in (("--quantization", "awq"), ("--max-model-len", "4096"),
                        ("--gpu-memory-utilization", "0.8")):
        assert command[command.index(flag) + 1] == value
    assert "--enable-prefix-caching" in command
    assert coder.healthy_deadline == 600  # the document's healthcheckTimeout
    assert set(coder.secret_env) == {"VLLM_API_KEY", "HF_TOKEN", "SENTRY_DSN"}
    assert {"hf-cache:/root/.cache/huggingface", "vllm-cache:/root/.cache/vllm"} <= set(coder.compose["volumes"])
    prometheus = render_fleet(project).nodes["model-server"].files["config/prometheus/prometheus.yml"].decode()
    assert "coder:8000" in prometheus  # /metrics scraped, on the compose network (same node)


def test_saas_services_share_the_database_and_the_master_key() -> None:
    project = load_project(REPO / "examples/litellm-saas")
    services = {s.name: s for s in build_services(project)}
    api, litellm = services["saas-api"], services["litellm"]
    assert api.secret_env["LITELLM_MASTER_KEY"] == litellm.secret_env["LITELLM_MASTER_KEY"]
    secrets = {name: Secret(f"v-{name}", name) for name in project.playbook.spec.secrets}
    api_env, litellm_env = env_file_body(api, secrets).decode(), env_file_body(litellm, secrets).decode()
    url = "postgresql://litellm:v-postgres_password@postgres:5432/litellm"
    assert f"DATABASE_URL='{url}'" in api_env and f"LITELLM_DB_URL='{url}'" in litellm_env
    assert api.compose["environment"]["LITELLM_PROXY_URL"] == "http://litellm:4000"
    config = render_fleet(project).nodes["saas"].files["config/litellm/config.yaml"].decode()
    assert "type: redis" in config and "database_url: os.environ/LITELLM_DB_URL" in config


def test_gateway_has_auth_rate_limit_cache_and_breaker() -> None:
    project = load_project(REPO / "examples/gateway")
    cfg = render_fleet(project).nodes["edge"].files["config/gateway/gateway.cfg"].decode()
    assert 'req.hdr(x-api-key) -m str "${GATEWAY_API_KEYS[*]}"' in cfg
    assert "return status 401" in cfg and "return status 429" in cfg
    assert "http-request cache-use api_cache" in cfg and "X-Cache-Status HIT" in cfg
    assert "observe layer7 error-limit 3 on-error mark-down" in cfg
    assert "server model-b 100.90.40.2:8001 check backup" in cfg
