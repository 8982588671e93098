"""examples/gateway on a 2-node lab (edge, gpu): the real HAProxy as the API gateway (keys,
rate limit, cache, circuit breaker) in front of two vLLM stand-ins. In `make test` (and
`make examples`): ~2.5 min on 2 cores (lab ~10 s, phase 1 ~15 s,
secrets ~6 s, phases 2-3 ~35 s, verify ~8 s, the breaker's stop/start ~40 s, the burst ~5 s)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from orchestrator.lab import api
from tests.integration.shaped import (
    client,
    deploy_example,
    env_values,
    node_sh,
    verify_passes,
    wait_for,
)

pytestmark = [pytest.mark.lab, pytest.mark.lab_shape]
NAME = "gateway"
GATEWAY_KEYS = env_values(NAME)["GATEWAY_API_KEYS"].split()


@pytest.fixture(scope="module")
def gateway(shaped_labs: None) -> Iterator[api.Lab]:
    yield deploy_example(NAME)


def gw(lab: api.Lab, method: str, path: str, key: str | None, **kwargs: object) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    with client() as http:
        return http.request(method, f"http://{lab.nodes['edge']}{path}", headers=headers, **kwargs)  # type: ignore[arg-type]


def chat_body() -> dict[str, object]:
    return {"model": "coder", "messages": [{"role": "user", "content": "ping"}]}


def test_gateway_verify(gateway: api.Lab) -> None:
    verify_passes(gateway, NAME)


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
