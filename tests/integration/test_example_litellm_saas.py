"""examples/litellm-saas on a 1-node lab (saas): the real PostgreSQL, Redis and LiteLLM with
the SaaS API stand-in. In `make test` (and `make examples`):
~2.5 min on 2 cores (lab ~8 s, phase 1 ~15 s, secrets ~6 s, phase 2 ~70 s with LiteLLM's
~20 s start, verify ~15 s, requests ~10 s)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from orchestrator.lab import api
from tests.integration.shaped import client, deploy_example, env_values, node_sh, verify_passes

pytestmark = [pytest.mark.lab, pytest.mark.lab_shape]
NAME = "litellm-saas"


@pytest.fixture(scope="module")
def saas(shaped_labs: None) -> Iterator[api.Lab]:
    yield deploy_example(NAME)


def saas_chat(lab: api.Lab, text: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with client() as http:
        return http.post(f"http://{lab.nodes['saas']}:4000/v1/chat/completions", headers=headers,
                         json={"model": "primary", "max_tokens": 8,
                               "messages": [{"role": "user", "content": text}]})


def test_saas_verify(saas: api.Lab) -> None:
    verify_passes(saas, NAME)


def test_saas_litellm_needs_the_master_key(saas: api.Lab) -> None:
    master = env_values(NAME)["LITELLM_MASTER_KEY"]
    assert saas_chat(saas, "hello", None).status_code == 401
    assert saas_chat(saas, "hello", "sk-wrong").status_code == 401
    answer = saas_chat(saas, f"hello {uuid.uuid4().hex}", master)
    assert answer.status_code == 200, answer.text
    assert f"{saas.nodes['saas']}:8001" in answer.headers["x-litellm-model-api-base"]  # the stack's model


def test_saas_repeated_request_comes_from_redis(saas: api.Lab) -> None:
    master = env_values(NAME)["LITELLM_MASTER_KEY"]
    text = f"cache probe {uuid.uuid4().hex}"
    first = saas_chat(saas, text, master)
    for _ in range(10):  # LiteLLM writes its cache in a background task: the hit may be a moment later
        again = saas_chat(saas, text, master)
        if again.status_code != 200 or first.status_code != 200 or again.json()["id"] == first.json()["id"]:
            break
        time.sleep(0.2)
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
