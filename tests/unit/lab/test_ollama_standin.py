"""The Ollama stand-in answers Ollama's documented API (docs/api.md, docs/openai.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.lab.standins import ollama, saas_api
from tests.unit.lab.test_standins import call, serve


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    url, server = serve(ollama.make_handler(ollama.Store(tmp_path / "models")))
    yield url
    server.shutdown()
    server.server_close()


def test_root_and_version(base: str) -> None:
    assert call(f"{base}/") == (200, "Ollama is running")
    assert call(f"{base}/api/version") == (200, {"version": ollama.VERSION})


def test_a_model_is_listed_only_after_it_is_pulled(base: str) -> None:
    assert call(f"{base}/api/tags") == (200, {"models": []})
    status, body = call(f"{base}/api/generate", {"model": "llama3", "prompt": "hi", "stream": False})
    assert status == 404 and body == {"error": 'model "llama3" not found, try pulling it first'}
    assert call(f"{base}/api/pull", {"model": "llama3", "stream": False}) == (200, {"status": "success"})
    status, tags = call(f"{base}/api/tags")
    assert [m["name"] for m in tags["models"]] == ["llama3:latest"]
    assert set(tags["models"][0]) == {"name", "model", "modified_at", "size", "digest", "details"}


def test_generate_and_chat_answer_as_documented(base: str) -> None:
    call(f"{base}/api/pull", {"model": "mistral", "stream": False})
    status, gen = call(f"{base}/api/generate", {"model": "mistral", "prompt": "why", "stream": False})
    assert status == 200 and gen["done"] is True and gen["done_reason"] == "stop"
    assert "why" in gen["response"] and gen["eval_count"] >= 1 and gen["prompt_eval_count"] >= 1
    status, chat = call(f"{base}/api/chat", {"model": "mistral:latest", "stream": False,
                                            "messages": [{"role": "user", "content": "hello"}]})
    assert status == 200 and chat["message"]["role"] == "assistant" and "hello" in chat["message"]["content"]


def test_streaming_is_newline_delimited_json_ending_done(base: str) -> None:
    call(f"{base}/api/pull", {"model": "llama3", "stream": False})
    status, text = call(f"{base}/api/generate", {"model": "llama3", "prompt": "a b c"})
    lines = [json.loads(line) for line in str(text).splitlines()]
    assert status == 200 and len(lines) > 1
    assert [o["done"] for o in lines] == [False] * (len(lines) - 1) + [True]


def test_openai_compatible_endpoints(base: str) -> None:
    call(f"{base}/api/pull", {"model": "llama3", "stream": False})
    status, models = call(f"{base}/v1/models")
    assert status == 200 and models["data"][0]["id"] == "llama3:latest"
    status, out = call(f"{base}/v1/chat/completions", {"model": "llama3", "messages": [
        {"role": "user", "content": "ping"}]})
    assert status == 200 and out["object"] == "chat.completion" and "ping" in out["choices"][0]["message"]["content"]


def test_pulled_models_survive_a_restart(tmp_path: Path) -> None:
    store = ollama.Store(tmp_path)
    store.add("llama2")
    assert ollama.Store(tmp_path).get("llama2:latest") is not None


@pytest.mark.parametrize(("value", "expected"), [
    (None, ("0.0.0.0", 11434)), ("0.0.0.0:11434", ("0.0.0.0", 11434)), (":9000", ("0.0.0.0", 9000)),
    ("127.0.0.1", ("127.0.0.1", 11434)), ("http://10.1.2.3:1234", ("10.1.2.3", 1234))])
def test_ollama_host(value: str | None, expected: tuple[str, int]) -> None:
    assert ollama.host_port(value) == expected


def test_saas_api_reads_the_database_url_into_libpq_env() -> None:
    env = saas_api.pg_env("postgresql://litellm:p%40ss@postgres:5432/litellm")
    assert env["PGHOST"] == "postgres" and env["PGUSER"] == "litellm"
    assert env["PGPASSWORD"] == "p@ss" and env["PGDATABASE"] == "litellm" and env["PGPORT"] == "5432"
