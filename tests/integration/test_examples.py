"""The four example projects, each on a lab in the shape of its own inventory, used as a
user of that stack would: HTTP requests with and without keys, from allowed and outside
addresses, against the real LiteLLM, PostgreSQL, Redis, HAProxy and Prometheus of the lab.

Each module-level fixture does what `make demo EXAMPLE=<name>` does (lab up in the
example's shape, phase 1, Vault init + the example's lab secrets, every phase, and — as one
test — `swarm verify`). Only one lab runs at a time: the examples replace the reference lab
while they run, and the reference lab is brought back afterwards when it was up before.
Lab shapes are kept small (1, 1, 3 and 2 nodes).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.lab import api
from tests.conftest import LAB_NODES, lab_skip_reason, running_lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NO_PROXY = {"trust_env": False}


def env_values(name: str) -> dict[str, str]:
    lines = (EXAMPLES / name / "lab-secrets.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def swarm(lab: api.Lab, name: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWARM_STATE_DIR": str(lab.paths.root / "state")}
    root = REPO if name == "reference" else EXAMPLES / name
    argv = [sys.executable, "-m", "orchestrator.cli", "--project", str(root),
            "-i", str(lab.inventory_path), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def node_sh(lab: api.Lab, node: str, *argv: str) -> str:
    result = subprocess.run(lab.ssh_argv(node, shlex.join(argv)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not seen within {seconds:g}s"
        time.sleep(0.5)


def client() -> httpx.Client:
    return httpx.Client(timeout=60, **NO_PROXY)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference_lab_after(lab_lock: None) -> Iterator[None]:
    """Leave the machine's lab as the examples found it: the reference lab comes back."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    was_up = running_lab() is not None
    yield
    if was_up:
        api.up(list(LAB_NODES))


def deploy_example(name: str) -> api.Lab:
    """What `make demo EXAMPLE=name` does, up to verify."""
    lab = api.up(None, source_inventory=EXAMPLES / name / "inventory" / "swarm.yml")
    ok(swarm(lab, name, "deploy", "--phase", "1"))
    ok(swarm(lab, name, "vault", "init", "--key-file", str(lab.paths.root / "vault-keys.json")))
    ok(swarm(lab, name, "secrets", "push", "--env-file", str(EXAMPLES / name / "lab-secrets.env")))
    ok(swarm(lab, name, "deploy"))
    return lab


def verify_passes(lab: api.Lab, name: str) -> None:
    result = swarm(lab, name, "verify")
    assert result.returncode == 0, f"swarm verify of {name}:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


# ================================================================ the reference fleet's phase 5


@pytest.fixture(scope="module")
def with_overflow(reference_lab_after: None) -> Iterator[api.Lab]:
    """The reference fleet on four nodes: overflow is a lab node, so optional phase 5 runs."""
    lab = api.up(["oracle", "starlord", "thanos", "overflow"])
    run = lambda *args: ok(swarm(lab, "reference", *args))  # noqa: E731
    run("deploy", "--phase", "1")
    run("vault", "init", "--key-file", str(lab.paths.root / "vault-keys.json"))
    run("secrets", "push", "--env-file", str(EXAMPLES / "lab-secrets.env"))
    run("deploy")  # every phase in order, 5 included
    yield lab


def test_phase_5_runs_on_the_fourth_node(with_overflow: api.Lab) -> None:
    overflow = with_overflow.nodes["overflow"]
    with client() as http:
        assert http.get(f"http://{overflow}:4000/health/liveliness").status_code == 200  # backup-router
        assert http.get(f"http://{overflow}:3002/api/health").status_code == 200        # analytics
        assert http.get(f"http://{overflow}:8001/").status_code == 200                   # research-worker
    pong = node_sh(with_overflow, "overflow", "docker", "exec", "swarm-overflow-redis-cache-1",
                   "redis-cli", "ping")
    assert pong.strip() == "PONG"
    ok(swarm(with_overflow, "reference", "verify", "--phase", "5"))


# ================================================================ vllm-server


@pytest.fixture(scope="module")
def vllm_server(reference_lab_after: None) -> Iterator[api.Lab]:
    yield deploy_example("vllm-server")


def test_vllm_server_verify(vllm_server: api.Lab) -> None:
    verify_passes(vllm_server, "vllm-server")


def test_vllm_server_needs_the_key_from_vault(vllm_server: api.Lab) -> None:
    url = f"http://{vllm_server.nodes['model-server']}:8000/v1/chat/completions"
    body = {"model": "coder-7b", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Write a Python async function to spawn an agent"}]}
    key = env_values("vllm-server")["VLLM_API_KEY"]
    with client() as http:
        assert http.post(url, json=body).status_code == 401
        assert http.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        answer = http.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["object"] == "chat.completion" and reply["model"] == "coder-7b"
    assert "spawn an agent" in reply["choices"][0]["message"]["content"]


def test_vllm_server_gets_hf_token_and_sentry_dsn_from_vault(vllm_server: api.Lab) -> None:
    values = env_values("vllm-server")
    seen = node_sh(vllm_server, "model-server", "docker", "exec", "swarm-model-server-coder-1", "env")
    assert f"HF_TOKEN={values['HF_TOKEN']}" in seen.splitlines()
    assert f"SENTRY_DSN={values['SENTRY_DSN']}" in seen.splitlines()


def test_vllm_server_plan_fits_the_card_and_counts_sequences(vllm_server: api.Lab) -> None:
    plan = json.loads(ok(swarm(vllm_server, "vllm-server", "plan", "--output", "json")).stdout)
    card = plan["nodes"]["model-server"]["gpus"][0]
    coder = card["instances"][0]
    assert card["vram_mib"] == 16376 and coder["fits"] and coder["starts"]
    assert coder["max_model_len"] == 4096 and coder["utilization"] == 0.8
    assert coder["kv_cache_tokens"] >= 4096 and coder["max_concurrency"] == pytest.approx(
        coder["kv_cache_tokens"] / 4096, abs=0.01)
    text = ok(swarm(vllm_server, "vllm-server", "plan")).stdout
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
    ok(swarm(vllm_server, "vllm-server", "deploy"))  # the repair path starts a new container
    out = node_sh(vllm_server, "model-server", "docker", "exec", container, "cat",
                  "/root/.cache/huggingface/marker", "/root/.cache/vllm/marker")
    assert out.split() == ["weights", "graphs"]


def test_init_probe_reads_the_machines_over_ssh(vllm_server: api.Lab, tmp_path: Path) -> None:
    """`swarm init --probe` against the lab's machines: arch, RAM and the GPU come from the
    machines themselves (one read-only command each), and the project plans at once."""
    target = tmp_path / "mine"
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "init", str(target), "--example", "vllm-server", "--probe",
         "--node", f"box@{vllm_server.nodes['model-server']}",
         "--ssh-key", str(vllm_server.key_path), "--known-hosts", str(vllm_server.known_hosts_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    import yaml

    nodes = yaml.safe_load((target / "inventory/swarm.yml").read_text())["nodes"]
    assert nodes["box"]["gpus"] == [{"model": "NVIDIA RTX A4000", "vram_mib": 16376}]  # its nvidia-smi
    assert nodes["box"]["ram_gb"] > 0 and nodes["box"]["cpus"] >= 1 and nodes["box"]["arch"] == "amd64"
    assert "coder" in nodes["box"]["services"]  # the example's GPU node landed on the GPU box
    planned = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--project", str(target), "plan"],
                             capture_output=True, text=True, timeout=300, cwd=REPO)
    assert planned.returncode == 0, planned.stderr


# ================================================================ litellm-saas


@pytest.fixture(scope="module")
def saas(reference_lab_after: None) -> Iterator[api.Lab]:
    yield deploy_example("litellm-saas")


def saas_chat(lab: api.Lab, text: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with client() as http:
        return http.post(f"http://{lab.nodes['saas']}:4000/v1/chat/completions", headers=headers,
                         json={"model": "primary", "max_tokens": 8,
                               "messages": [{"role": "user", "content": text}]})


def test_saas_verify(saas: api.Lab) -> None:
    verify_passes(saas, "litellm-saas")


def test_saas_litellm_needs_the_master_key(saas: api.Lab) -> None:
    master = env_values("litellm-saas")["LITELLM_MASTER_KEY"]
    assert saas_chat(saas, "hello", None).status_code == 401
    assert saas_chat(saas, "hello", "sk-wrong").status_code == 401
    answer = saas_chat(saas, f"hello {uuid.uuid4().hex}", master)
    assert answer.status_code == 200, answer.text
    assert f"{saas.nodes['saas']}:8001" in answer.headers["x-litellm-model-api-base"]  # the stack's model


def test_saas_repeated_request_comes_from_redis(saas: api.Lab) -> None:
    master = env_values("litellm-saas")["LITELLM_MASTER_KEY"]
    text = f"cache probe {uuid.uuid4().hex}"
    first = saas_chat(saas, text, master)
    again = saas_chat(saas, text, master)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]  # the same answer, served from the cache
    keys = node_sh(saas, "saas", "docker", "exec", "swarm-saas-redis-1", "sh", "-c",
                   "redis-cli --scan --pattern '*' | head -100")
    assert keys.strip(), "Redis holds no cache entry"


def test_saas_api_tracks_jobs_in_postgres_and_calls_litellm(saas: api.Lab) -> None:
    base = f"http://{saas.nodes['saas']}:8000"
    with client() as http:
        assert http.get(f"{base}/health").json() == {"status": "healthy", "service": "saas-llm-api"}
        job = http.post(f"{base}/api/jobs/create",
                        json={"team_id": "test-team", "job_type": "test", "metadata": {"test": True}}).json()
        done = http.post(f"{base}/api/jobs/{job['job_id']}/complete",
                         json={"model": "primary", "prompt": "summarise the job"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed" and "summarise the job" in done.json()["result"]
    row = node_sh(saas, "saas", "docker", "exec", "swarm-saas-postgres-1", "psql", "-U", "litellm",
                  "-d", "litellm", "-tAc", f"SELECT team_id, status FROM job_tracking WHERE job_id = '{job['job_id']}'")
    assert row.strip() == "test-team|completed"


# ================================================================ litellm-tailnet-ollama

CLIENT_KEYS = {"acme": "sk-client-acme-5d1e7a93", "globex": "sk-client-globex-b08c4f62"}


@pytest.fixture(scope="module")
def tailnet(reference_lab_after: None) -> Iterator[api.Lab]:
    yield deploy_example("litellm-tailnet-ollama")


def front_door_chat(lab: api.Lab, model: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with client() as http:
        return http.post(f"http://{lab.nodes['proxy']}/v1/chat/completions", headers=headers,
                         json={"model": model, "messages": [{"role": "user", "content": "Hello!"}]})


def test_tailnet_verify(tailnet: api.Lab) -> None:
    verify_passes(tailnet, "litellm-tailnet-ollama")


def test_tailnet_routes_model_names_to_the_ollama_hosts(tailnet: api.Lab) -> None:
    answer = front_door_chat(tailnet, "llama3-hugo", CLIENT_KEYS["acme"])
    assert answer.status_code == 200, answer.text
    assert f"{tailnet.nodes['hugo']}:11434" in answer.headers["x-litellm-model-api-base"]
    assert "[lab Ollama llama3:latest]" in answer.json()["choices"][0]["message"]["content"]
    mistral = front_door_chat(tailnet, "mistral", CLIENT_KEYS["globex"])
    assert mistral.status_code == 200 and f"{tailnet.nodes['hab']}:11434" in mistral.headers[
        "x-litellm-model-api-base"]


def test_tailnet_per_client_keys(tailnet: api.Lab) -> None:
    assert front_door_chat(tailnet, "llama3", None).status_code == 401
    assert front_door_chat(tailnet, "llama3", "sk-client-unknown").status_code == 401
    for key in CLIENT_KEYS.values():
        assert front_door_chat(tailnet, "llama3", key).status_code == 200


def test_tailnet_allowlist_turns_other_lab_addresses_away(tailnet: api.Lab) -> None:
    # The controller (198.18.0.1) is on the lab's allowlist; hab is a lab address that is not.
    assert front_door_chat(tailnet, "llama3", CLIENT_KEYS["acme"]).status_code == 200
    url = f"http://{tailnet.nodes['proxy']}/v1/models"
    outside = tailnet.exec_on("hab", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                      f"Authorization: Bearer {CLIENT_KEYS['acme']}", url])
    assert outside.stdout.strip() == "403"


def test_tailnet_preflight_checks_ollama_reach_and_exposure(tailnet: api.Lab) -> None:
    report = json.loads(swarm(tailnet, "litellm-tailnet-ollama", "preflight", "--phase", "3",
                              "--output", "json").stdout)
    reach = {r["subject"]: r["status"] for r in report["results"] if r["check"] == "network"}
    assert reach.get("hab:11434 (ollama)") == "pass" and reach.get("hugo:11434 (ollama-hugo)") == "pass"
    hab = tailnet.nodes["hab"]
    stray = subprocess.Popen(  # a second server on hab, as a forgotten service would be
        ["ip", "netns", "exec", "lab-hab", "timeout", "120", sys.executable, "-m", "http.server",
         "8089", "--bind", hab], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "8089" in tailnet.exec_on("hab", ["ss", "-ltnH"]).stdout, 20, "the stray listener")
        result = swarm(tailnet, "litellm-tailnet-ollama", "preflight", "--phase", "2", "--output", "json")
        exposure = [r for r in json.loads(result.stdout)["results"] if r["check"] == "ollama-acl"]
    finally:
        stray.kill()
        stray.wait(10)
    by_node = {r["node"]: r for r in exposure}
    assert by_node["hab"]["status"] == "warn" and "8089" in by_node["hab"]["message"]
    assert by_node["hugo"]["status"] == "pass"


def test_tailnet_a_revoked_client_key_stops_working(tailnet: api.Lab, tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(tailnet.inventory_path.read_text())
    del data["nodes"]["proxy"]["services"]["litellm"]["client_keys"]["globex"]
    revoked = tmp_path / "inventory.yml"
    revoked.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "SWARM_STATE_DIR": str(tailnet.paths.root / "state")}
    ok(subprocess.run([sys.executable, "-m", "orchestrator.cli", "--project",
                       str(EXAMPLES / "litellm-tailnet-ollama"), "-i", str(revoked), "deploy", "--phase", "3"],
                      capture_output=True, text=True, env=env, timeout=900, cwd=REPO))
    assert front_door_chat(tailnet, "llama3", CLIENT_KEYS["globex"]).status_code == 401
    assert front_door_chat(tailnet, "llama3", CLIENT_KEYS["acme"]).status_code == 200


# ================================================================ gateway

GATEWAY_KEYS = env_values("gateway")["GATEWAY_API_KEYS"].split()


@pytest.fixture(scope="module")
def gateway(reference_lab_after: None) -> Iterator[api.Lab]:
    yield deploy_example("gateway")


def gw(lab: api.Lab, method: str, path: str, key: str | None, **kwargs: object) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    with client() as http:
        return http.request(method, f"http://{lab.nodes['edge']}{path}", headers=headers, **kwargs)  # type: ignore[arg-type]


def chat_body() -> dict[str, object]:
    return {"model": "coder", "messages": [{"role": "user", "content": "ping"}]}


def test_gateway_verify(gateway: api.Lab) -> None:
    verify_passes(gateway, "gateway")


def test_gateway_needs_a_key(gateway: api.Lab) -> None:
    assert gw(gateway, "GET", "/v1/models", None).status_code == 401
    assert gw(gateway, "GET", "/v1/models", "not-a-key").status_code == 401
    answer = gw(gateway, "POST", "/v1/chat/completions", GATEWAY_KEYS[0], json=chat_body())
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-served-by"] == "model-a"


def test_gateway_caches_a_repeated_get(gateway: api.Lab) -> None:
    path = f"/v1/models?probe={uuid.uuid4().hex}"
    first = gw(gateway, "GET", path, GATEWAY_KEYS[0])
    again = gw(gateway, "GET", path, GATEWAY_KEYS[0])
    assert first.status_code == again.status_code == 200
    assert (first.headers["x-cache-status"], again.headers["x-cache-status"]) == ("MISS", "HIT")


def test_gateway_rate_limits_a_burst(gateway: api.Lab) -> None:
    codes = [gw(gateway, "GET", "/v1/models", GATEWAY_KEYS[1]).status_code for _ in range(70)]
    assert codes[0] == 200 and 429 in codes
    assert all(c == 429 for c in codes[codes.index(429):])  # once over the limit, refused
    assert gw(gateway, "GET", "/v1/models", GATEWAY_KEYS[0]).status_code == 200  # per key


def stats(lab: api.Lab) -> dict[str, str]:
    with client() as http:
        text = http.get(f"http://{lab.nodes['edge']}:8404/stats;csv").text
    rows = [line.split(",") for line in text.splitlines()[1:] if line]
    return {r[1]: r[17] for r in rows if r[0] == "gpu" and r[1] not in ("FRONTEND", "BACKEND")}


def test_gateway_circuit_breaker_opens_and_closes(gateway: api.Lab) -> None:
    def served_by() -> str:
        answer = gw(gateway, "POST", "/v1/chat/completions", GATEWAY_KEYS[0], json=chat_body())
        return answer.headers.get("x-served-by", str(answer.status_code))

    node_sh(gateway, "gpu", "docker", "stop", "swarm-gpu-model-a-1")
    try:
        wait_for(lambda: stats(gateway).get("model-a", "").startswith("DOWN"), 30, "model-a marked DOWN")
        assert {served_by() for _ in range(5)} == {"model-b"}  # open: the fallback takes it all
        node_sh(gateway, "gpu", "docker", "stop", "swarm-gpu-model-b-1")
        wait_for(lambda: stats(gateway).get("model-b", "").startswith("DOWN"), 30, "model-b marked DOWN")
        failed = gw(gateway, "POST", "/v1/chat/completions", GATEWAY_KEYS[0], json=chat_body())
        assert failed.status_code == 503  # no backend left: refused at once, nothing is tried
    finally:
        node_sh(gateway, "gpu", "docker", "start", "swarm-gpu-model-a-1", "swarm-gpu-model-b-1")
    wait_for(lambda: stats(gateway).get("model-a", "").startswith("UP"), 60, "model-a back UP")
    assert served_by() == "model-a"  # closed again: the primary serves

