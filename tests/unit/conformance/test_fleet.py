"""Cross-node judges: Consul statuses, HAProxy's stats CSV, a LiteLLM answer."""

from __future__ import annotations

import pytest

from orchestrator.conformance import fleet

CSV = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
st_clients,BACKEND,0,0,0,0,,0,0,0,0,0,,0,0,0,0,UP,0
model_big,vllm-primary,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1
model_big,BACKEND,0,0,0,0,,0,0,0,0,0,,0,0,0,0,UP,1
model_small,vllm-secondary,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1
model_small,stray,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1
model_small,BACKEND,0,0,0,0,,0,0,0,0,0,,0,0,0,0,UP,1
"""


def test_consul() -> None:
    assert fleet.consul_problems("a", {"a": "passing"}) == []
    assert fleet.consul_problems("a", {"a": "critical"}) == ["a is critical in Consul"]
    assert fleet.consul_problems("b", {}) == ["b is not registered in Consul"]
    assert fleet.consul_problems("b", {}, 3) == ["b is not registered in Consul (a deploy of phase 3 registers it)"]


def test_pool_from_stats_csv() -> None:
    rows = fleet.parse_haproxy_csv(CSV)
    expected = {"vllm-primary": "model_big", "vllm-secondary": "model_small", "vllm-backup": "model_small"}
    assert fleet.pool_problems(rows, expected) == [
        "vllm-backup is not a server of model_small",
        "model_small server vllm-secondary is DOWN",
        "model_small has server stray, which is no vLLM of the playbook serving that model"]
    assert fleet.pool_problems(rows[:1], {"x": "model_x"}) == ["HAProxy has no backend model_x",
                                                                 "x is not a server of model_x"]
    assert fleet.model_backends([]) == {}


def test_stats_must_be_csv() -> None:
    with pytest.raises(ValueError):
        fleet.parse_haproxy_csv("<html>")


class _Svc:
    def __init__(self, name: str, served: str, address: str, port: int) -> None:
        from orchestrator.render.services import Port

        self.name, self.address = name, address
        self.vars = {"served_model_name": served}
        self.ports = (Port(port=port, target=8000),)


def test_urls_of_a_service_at_an_ipv6_address_bracket_it() -> None:
    vllm = _Svc("vllm-primary", "org/model-a", "fd00::5", 8000)
    assert fleet.service_url(vllm) + "/health" == "http://[fd00::5]:8000/health"  # type: ignore[arg-type]
    ok = {"x-litellm-model-api-base": "http://[fd00::5]:8000/v1"}
    assert fleet.chat_problems(200, {"model": "x", "choices": [1]}, ok, [vllm]) == []  # type: ignore[arg-type]


def test_chat_answer_must_come_from_a_vllm() -> None:
    vllms = [_Svc("vllm-primary", "org/model-a", "198.18.1.2", 8000)]
    ok_body = {"model": "org/model-a", "choices": [{"message": {"content": "hi"}}]}
    assert fleet.chat_problems(200, ok_body, {}, vllms) == []  # type: ignore[arg-type]
    assert fleet.chat_problems(200, {"model": "x", "choices": [1]},
                               {"x-litellm-model-api-base": "http://198.18.1.2:8000/v1"}, vllms) == []  # type: ignore[arg-type]
    assert "HTTP 401" in fleet.chat_problems(401, None, {}, vllms)[0]  # type: ignore[arg-type]
    assert "without choices" in fleet.chat_problems(200, {"choices": []}, {}, vllms)[0]  # type: ignore[arg-type]
    assert "not from a vLLM" in fleet.chat_problems(200, {"model": "gpt-4", "choices": [1]}, {}, vllms)[0]  # type: ignore[arg-type]
