"""examples/vllm-server on a 1-node lab in its inventory's shape (model-server, a 16 GB
card), and `swarm init --probe` against that lab machine. In `make test` (the cheapest
example, ~2 min on 2 cores: lab ~8 s, phase 1 ~15 s, secrets ~6 s, phase 2 ~25 s, verify
~8 s, the caches' redeploy ~20 s, metrics wait <= 60 s, init + plan ~10 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.lab import api
from tests.integration.shaped import (
    REPO,
    client,
    deploy_example,
    env_values,
    node_sh,
    ok,
    swarm,
    verify_passes,
    wait_for,
)

pytestmark = [pytest.mark.lab, pytest.mark.lab_shape]
NAME = "vllm-server"


@pytest.fixture(scope="module")
def vllm_server(shaped_labs: None) -> Iterator[api.Lab]:
    yield deploy_example(NAME)


def test_vllm_server_verify(vllm_server: api.Lab) -> None:
    verify_passes(vllm_server, NAME)


def test_vllm_server_needs_the_key_from_vault(vllm_server: api.Lab) -> None:
    url = f"http://{vllm_server.nodes['model-server']}:8000/v1/chat/completions"
    body = {"model": "coder-7b", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Write a Python async function to spawn an agent"}]}
    key = env_values(NAME)["VLLM_API_KEY"]
    with client() as http:
        assert http.post(url, json=body).status_code == 401
        assert http.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        answer = http.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["object"] == "chat.completion" and reply["model"] == "coder-7b"
    assert "spawn an agent" in reply["choices"][0]["message"]["content"]


def test_vllm_server_gets_hf_token_and_sentry_dsn_from_vault(vllm_server: api.Lab) -> None:
    values = env_values(NAME)
    seen = node_sh(vllm_server, "model-server", "docker", "exec", "swarm-model-server-coder-1", "env")
    assert f"HF_TOKEN={values['HF_TOKEN']}" in seen.splitlines()
    assert f"SENTRY_DSN={values['SENTRY_DSN']}" in seen.splitlines()


def test_vllm_server_plan_fits_the_card_and_counts_sequences(vllm_server: api.Lab) -> None:
    plan = json.loads(ok(swarm(vllm_server, NAME, "plan", "--output", "json")).stdout)
    card = plan["nodes"]["model-server"]["gpus"][0]
    coder = card["instances"][0]
    assert card["vram_mib"] == 16376 and coder["fits"] and coder["starts"]
    assert coder["max_model_len"] == 4096 and coder["utilization"] == 0.8
    assert coder["kv_cache_tokens"] >= 4096 and coder["max_concurrency"] == pytest.approx(
        coder["kv_cache_tokens"] / 4096, abs=0.01)
    text = ok(swarm(vllm_server, NAME, "plan")).stdout
    assert "max_concurrency" in text and "at 4096 tokens: ok" in text


def test_vllm_server_metrics_are_scraped(vllm_server: api.Lab) -> None:
    base = f"http://{vllm_server.nodes['model-server']}:9090"

    def vllm_target_up() -> bool:
        with client() as http:
            targets = http.get(f"{base}/api/v1/targets").json()["data"]["activeTargets"]
        return any(t["labels"].get("job") == "vllm" and t["health"] == "up" for t in targets)

    wait_for(vllm_target_up, 60, "Prometheus scraping vLLM's /metrics")
    with client() as http:
        series = http.get(f"{base}/api/v1/query", params={"query": "vllm:num_requests_running"}).json()
    assert series["data"]["result"], series


def test_vllm_server_caches_survive_a_new_container(vllm_server: api.Lab) -> None:
    container = "swarm-model-server-coder-1"
    node_sh(vllm_server, "model-server", "docker", "exec", container, "sh", "-c",
            "echo weights > /root/.cache/huggingface/marker && echo graphs > /root/.cache/vllm/marker")
    node_sh(vllm_server, "model-server", "docker", "rm", "-f", container)
    ok(swarm(vllm_server, NAME, "deploy"))  # the repair path starts a new container
    out = node_sh(vllm_server, "model-server", "docker", "exec", container, "cat",
                  "/root/.cache/huggingface/marker", "/root/.cache/vllm/marker")
    assert out.split() == ["weights", "graphs"]


def test_init_probe_reads_the_machines_over_ssh(vllm_server: api.Lab, tmp_path: Path) -> None:
    """`swarm init --probe` against the lab's machine: arch, RAM and the GPU come from the
    machine itself (one read-only command), and the project plans at once."""
    target = tmp_path / "mine"
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "init", str(target), "--example", NAME, "--probe",
         "--node", f"box@{vllm_server.nodes['model-server']}",
         "--ssh-key", str(vllm_server.key_path), "--known-hosts", str(vllm_server.known_hosts_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    nodes = yaml.safe_load((target / "inventory/swarm.yml").read_text())["nodes"]
    assert nodes["box"]["gpus"] == [{"model": "NVIDIA RTX A4000", "vram_mib": 16376}]  # its nvidia-smi
    assert nodes["box"]["ram_gb"] > 0 and nodes["box"]["cpus"] >= 1 and nodes["box"]["arch"] == "amd64"
    assert "coder" in nodes["box"]["services"]  # the example's GPU node landed on the GPU box
    planned = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--project", str(target), "plan"],
                             capture_output=True, text=True, timeout=300, cwd=REPO)
    assert planned.returncode == 0, planned.stderr
