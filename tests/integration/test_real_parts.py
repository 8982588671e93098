"""The real programs on oracle (LiteLLM, PostgreSQL, Prometheus), the front door's allowlist,
and every "where to look" command of the README and the demo, against the deployed lab.

LiteLLM here is the PyPI proxy the role pins, so routing, fallbacks, the Redis cache and
master-key auth are LiteLLM's own behaviour; PostgreSQL and Prometheus are Debian's
binaries running the roles' rendered configs. Each test says what a user would see.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.labtools import REPO, node_get, node_sh, ok, swarm

pytestmark = pytest.mark.lab

MASTER_KEY = "sk-lab-master-9c41e77a"
VLLM_KEY = "lab-vllm-key-d81f2c6b"
LAB_ORACLE = "198.18.1.1"  # what the README and the demo print for oracle


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not seen within {seconds:g}s"
        time.sleep(0.5)


def in_container(lab, node: str, service: str, script: str) -> str:
    return node_sh(lab, node, "docker", "exec", f"swarm-{node}-{service}-1", "sh", "-c", script)


def chat(oracle: str, model: str, text: str) -> httpx.Response:
    """LiteLLM through the front door (its own port is oracle's only; the controller is allowlisted)."""
    return httpx.post(f"http://{oracle}/v1/chat/completions", timeout=90,
                      headers={"Authorization": f"Bearer {MASTER_KEY}"},
                      json={"model": model, "max_tokens": 8,
                            "messages": [{"role": "user", "content": text}]})


# ---------------------------------------------------------------- LiteLLM


def test_litellm_is_the_pinned_release(deployed) -> None:
    oracle = deployed.nodes["oracle"]
    ready = httpx.get(f"http://{oracle}/health/readiness", timeout=10).json()
    assert ready["litellm_version"] == "1.55.8"
    assert ready["cache"] == "redis"  # the rendered cache_params reached the proxy
    cli = in_container(deployed, "oracle", "litellm", "litellm --version")
    assert "1.55.8" in cli


def test_litellm_master_key_guards_the_model_list(deployed) -> None:
    url = f"http://{deployed.nodes['oracle']}/v1/models"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, timeout=10, headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
    listed = httpx.get(url, timeout=10, headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()
    assert {m["id"] for m in listed["data"]} == {"primary", "secondary", "backup", "swarm",
                                                 "cloud-fallback"}


def test_litellm_routes_to_the_tier_and_caches_in_redis(deployed) -> None:
    oracle = deployed.nodes["oracle"]
    text = f"cache probe {uuid.uuid4().hex}"
    first = chat(oracle, "primary", text)
    assert first.status_code == 200, first.text
    # through the front door's backend for the primary's model, and the answer says who gave it
    assert first.headers["x-litellm-model-api-base"].endswith("/models/casperhansen--mistral-nemo-instruct-2407-awq/v1")
    assert first.headers["x-litellm-model-id"] == "vllm-primary"
    assert first.json()["model"].endswith("casperhansen/mistral-nemo-instruct-2407-awq")
    for _ in range(10):  # LiteLLM writes its cache in a background task: the hit may be a moment later
        again = chat(oracle, "primary", text)
        if again.status_code != 200 or again.json()["id"] == first.json()["id"]:
            break
        time.sleep(0.2)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]  # a cache hit
    keys = in_container(deployed, "oracle", "redis",
                        'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" dbsize')
    assert int(keys) > 0


def _server_up(lab, backend: str, server: str) -> bool:
    _, csv = node_get(lab, "oracle", "http://127.0.0.1:8888/stats;csv")
    return any(line.startswith(f"{backend},{server},") and ",UP" in line for line in csv.splitlines())


def test_litellm_falls_back_when_the_primary_is_down(deployed) -> None:
    """The fallbacks the inventory declares (primary -> secondary) are LiteLLM's own doing, and
    the answer says it came from another instance (x-litellm-model-id, the body's model)."""
    oracle = deployed.nodes["oracle"]
    node_sh(deployed, "starlord", "docker", "stop", "-t", "1", "swarm-starlord-vllm-primary-1")
    try:
        answer = chat(oracle, "primary", f"fallback probe {uuid.uuid4().hex}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-litellm-model-id"] == "vllm-secondary"
        assert answer.json()["model"].endswith("TheBloke/Mistral-7B-Instruct-v0.2-GPTQ")
    finally:
        node_sh(deployed, "starlord", "docker", "start", "swarm-starlord-vllm-primary-1")
        wait_for(lambda: _server_up(deployed, "model_casperhansen--mistral-nemo-instruct-2407-awq", "vllm-primary"),
                 60, "vllm-primary back UP in the front door")
        wait_for(lambda: not [c for c in httpx.get(f"http://{oracle}:8500/v1/health/state/critical", timeout=5).json()
                              if "vllm-primary" in c.get("ServiceID", "")], 90,
                 "vllm-primary passing in Consul again")  # `swarm status` (a test below) reads it


# ---------------------------------------------------------------- the allowlist


ALLOWLIST_PROBE = """
import sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
try:
    print(urllib.request.urlopen(req, timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


def test_front_door_allowlist_admits_the_controller_and_refuses_a_node(deployed) -> None:
    """`allowed_ips` is enforced by HAProxy on the paths to LiteLLM and to the models: the lab
    puts only the controller (198.18.0.1) on it, so thanos (198.18.1.3) is another lab address."""
    url = f"http://{deployed.nodes['oracle']}/v1/models"
    allowed = httpx.get(url, timeout=10, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert allowed.status_code == 200 and allowed.json()["data"]
    from_thanos = deployed.exec_on("thanos", [sys.executable, "-c", ALLOWLIST_PROBE, url, MASTER_KEY])
    assert from_thanos.stdout.strip() == "403"
    pool = deployed.exec_on("thanos", [sys.executable, "-c", ALLOWLIST_PROBE,
                                       f"http://{deployed.nodes['oracle']}/pool/v1/models", VLLM_KEY])
    assert pool.stdout.strip() == "403"  # the models' paths too: LiteLLM's allowlist cannot be bypassed


# ---------------------------------------------------------------- PostgreSQL


def test_postgres_is_postgresql_15_and_keeps_data(deployed) -> None:
    assert "PostgreSQL) 15." in in_container(deployed, "oracle", "postgres", "postgres --version")
    table = f"probe_{uuid.uuid4().hex[:8]}"
    sql = (f"CREATE TABLE {table} (v text); INSERT INTO {table} VALUES ('kept'); "
           f"SELECT v FROM {table}; DROP TABLE {table};")
    out = in_container(deployed, "oracle", "postgres",
                       f'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U litellm -d litellm '
                       f'-v ON_ERROR_STOP=1 -tAc "{sql}"')
    assert "kept" in out.split()


def test_postgres_refuses_a_wrong_password(deployed) -> None:
    result = subprocess.run(deployed.ssh_argv("oracle", shlex.join([
        "docker", "exec", "-e", "PGPASSWORD=wrong", "swarm-oracle-postgres-1",
        "psql", "-h", "127.0.0.1", "-U", "litellm", "-d", "litellm", "-c", "SELECT 1"])),
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert 'password authentication failed for user "litellm"' in result.stderr


# ---------------------------------------------------------------- Prometheus


def test_prometheus_is_real_and_runs_the_rendered_config(deployed) -> None:
    base = "http://127.0.0.1:9090/api/v1"  # Prometheus' port is oracle's only
    build = json.loads(node_get(deployed, "oracle", f"{base}/status/buildinfo")[1])
    assert build["status"] == "success" and build["data"]["version"].startswith("2.42")
    loaded = json.loads(node_get(deployed, "oracle", f"{base}/status/config")[1])["data"]["yaml"]
    jobs = set(re.findall(r"job_name: (\S+)", loaded))
    assert {"prometheus", "vllm", "haproxy", "litellm", "gpu"} <= jobs
    groups = {g["name"] for g in json.loads(node_get(deployed, "oracle", f"{base}/rules")[1])["data"]["groups"]}
    assert groups == {"swarm-gpu", "swarm-services", "swarm-backups"}  # the stale-backup alerts too


def _target_health(lab, base: str) -> dict[tuple[str, str], str]:
    targets = json.loads(node_get(lab, "oracle", f"{base}/targets")[1])["data"]["activeTargets"]
    return {(t["labels"]["job"], t["labels"].get("service", "")): t["health"] for t in targets}


def test_prometheus_scrapes_litellm_and_haproxy(deployed) -> None:
    """Real Prometheus scraping the real LiteLLM's /metrics (its prometheus callback) and
    HAProxy's exporter, as the rendered scrape jobs say."""
    base = "http://127.0.0.1:9090/api/v1"
    wanted = {("litellm", "litellm"), ("haproxy", "haproxy")}
    wait_for(lambda: all(_target_health(deployed, base).get(k) == "up" for k in wanted), 45,
             "litellm and haproxy targets up")


def test_prometheus_refuses_a_bogus_scrape_interval(deployed) -> None:
    image = json.loads(node_sh(deployed, "oracle", "docker", "inspect", "swarm-oracle-prometheus-1"))[0]
    script = ("printf 'global:\\n  scrape_interval: bogus\\n' > /tmp/p.yml && "
              "exec prometheus --config.file=/tmp/p.yml --storage.tsdb.path=/tmp/data")
    result = subprocess.run(deployed.ssh_argv("oracle", shlex.join([
        "docker", "run", "--rm", "--entrypoint", "sh", image["Config"]["Image"], "-c", script])),
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert 'not a valid duration string: \\"bogus\\"' in result.stderr


# ---------------------------------------------------------------- what the docs tell users to try


def _readme_commands() -> list[str]:
    """The backticked commands of the README's "Where to look afterwards" bullets."""
    text = (REPO / "README.md").read_text()
    section = text.split("Where to look afterwards", 1)[1].split("\n\n", 2)[1]
    return [cmd for line in section.splitlines() if line.startswith("* ")
            for cmd in re.findall(r"`([^`]+)`", line)]


def _demo_commands() -> list[str]:
    """The commands of scripts/demo.sh's closing "Look at:" lines ($oracle, $INV as printed)."""
    text = (REPO / "scripts/demo.sh").read_text().split("Look at:", 1)[1]
    out = []
    for line in re.findall(r'^echo "  [^:]+:\s+(.*)"$', text, flags=re.M):
        main, _, alt = line.partition("(or: ")
        out += [c.strip().rstrip(")") for c in (main, alt) if c.strip()]
    return [c.replace("$oracle", LAB_ORACLE).replace("$INV", "$I") for c in out]


# Commands the docs list that change the lab: exercised by the tests named here instead.
ELSEWHERE = {
    "swarm -i $I rollback --phase 3": ("test_deploy.py", "test_rollback_on_demand_and_to_a_named_release"),
    "swarm lab down": ("test_lab_light.py", "test_fifty_light_nodes_then_nothing_left"),
}
DOC_COMMANDS = sorted(set(_readme_commands()) | set(_demo_commands()))
# Known to fail on the lab, for a reason outside the lab: strict, so a fix shows up here.
BROKEN: dict[str, str] = {}


def _doc_param(command: str) -> object:
    reason = BROKEN.get(command)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(command, marks=marks, id=command)


def test_the_docs_list_what_this_module_tries() -> None:
    """The parsers above found the README's and the demo's lists (a reworded list fails here)."""
    assert any(c.startswith("http://") for c in DOC_COMMANDS)
    assert any("/v1/health/state/any" in c for c in DOC_COMMANDS)
    assert any(c.startswith("swarm -i $I") for c in DOC_COMMANDS)
    for command, (module, test) in ELSEWHERE.items():
        assert command in DOC_COMMANDS
        assert f"def {test}(" in (Path(__file__).parent / module).read_text()


def _http_get(command: str) -> httpx.Response:
    words = shlex.split(command)
    headers = {}
    if words[0] == "curl":
        pairs = [words[i + 1] for i, w in enumerate(words) if w == "-H"]
        headers = dict(h.split(": ", 1) for h in pairs)
    return httpx.get(words[-1], headers=headers, timeout=20)


@pytest.mark.parametrize("command", [_doc_param(c) for c in DOC_COMMANDS if c not in ELSEWHERE])
def test_doc_command_works(deployed, command: str) -> None:
    assert deployed.nodes["oracle"] == LAB_ORACLE
    if command.startswith(("http://", "curl ")):
        response = _http_get(command)
        assert response.status_code == 200, f"{command}: {response.status_code} {response.text[:200]}"
        if "/v1/health/state/any" in command:
            names = {c["ServiceName"] for c in response.json()}
            assert {"litellm", "postgres", "prometheus", "haproxy"} <= names
        if "/v1/models" in command:
            assert response.json()["data"]
        return
    words = shlex.split(command)
    assert words[:3] == ["swarm", "-i", "$I"], f"no runner for {command!r}"
    ok(swarm(deployed, *words[3:]))
