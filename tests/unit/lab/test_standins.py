"""The HTTP stand-ins, served in-process on port 0, and the image shims."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab import rootfs
from orchestrator.lab.standins import _base, generic, qdrant, vllm

HEALTHY = _base.Mode()
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def serve(handler: type[_base.Handler]) -> tuple[str, ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.fixture
def servers() -> Iterator[list[ThreadingHTTPServer]]:
    started: list[ThreadingHTTPServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def call(url: str, body: Any = None, key: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with NO_PROXY.open(request, timeout=5) as reply:
            raw = reply.read()
            status = reply.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode()


@pytest.mark.parametrize(("text", "mode"), [
    (None, _base.Mode()), ("healthy", _base.Mode()), ("never-healthy", _base.Mode("never-healthy")),
    ("die-after:3", _base.Mode("die-after", 3.0)), ("slow-start:1.5", _base.Mode("slow-start", 1.5)),
    ("slow-start:x", _base.Mode()), ("bogus", _base.Mode()),
])
def test_mode_parsing(text: str | None, mode: _base.Mode) -> None:
    assert _base.parse_mode(text) == mode


def _vllm(servers: list[ThreadingHTTPServer], *argv: str,
          mode: _base.Mode = HEALTHY) -> str:
    handler = vllm.make_handler(vllm.parse_args(list(argv)))
    handler.mode = mode
    url, server = serve(handler)
    servers.append(server)
    return url


def test_vllm_accepts_real_cli_and_enforces_key(servers: list[ThreadingHTTPServer]) -> None:
    url = _vllm(servers, "--model", "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ", "--port", "8000",
                "--served-model-name", "mistral", "--max-model-len", "32768",
                "--quantization", "gptq", "--kv-cache-dtype", "fp8", "--enable-prefix-caching",
                "--gpu-memory-utilization", "0.85", "--max-num-seqs", "8", "--api-key", "k1")
    assert call(f"{url}/health")[0] == 200
    assert call(f"{url}/v1/models")[0] == 401
    status, body = call(f"{url}/v1/models", key="k1")
    assert status == 200 and body["data"][0]["id"] == "mistral"
    assert body["data"][0]["max_model_len"] == 32768
    status, body = call(f"{url}/v1/chat/completions", {"model": "mistral", "messages": [
        {"role": "user", "content": "ping"}]}, key="k1")
    assert status == 200 and "ping" in body["choices"][0]["message"]["content"]
    assert call(f"{url}/v1/chat/completions", {"model": "other", "messages": []}, key="k1")[0] == 404
    assert "vllm:request_success_total" in call(f"{url}/metrics")[1]


def test_vllm_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "envkey")
    assert vllm.parse_args(["--model", "m"]).api_key == "envkey"


def test_vllm_never_healthy(servers: list[ThreadingHTTPServer]) -> None:
    url = _vllm(servers, "--model", "m", mode=_base.Mode("never-healthy"))
    assert call(f"{url}/health")[0] == 503


def test_qdrant_collections_persist(servers: list[ThreadingHTTPServer], tmp_path: Path) -> None:
    url, server = serve(qdrant.make_handler(qdrant.Store(tmp_path), None))
    servers.append(server)
    assert call(f"{url}/readyz")[0] == 200
    request = urllib.request.Request(f"{url}/collections/docs", method="PUT",
                                     data=b'{"vectors": {"size": 4, "distance": "Cosine"}}')
    with NO_PROXY.open(request, timeout=5) as reply:
        assert reply.status == 200
    again = qdrant.Store(tmp_path)  # as after a container restart on the same volume
    assert list(again.load()) == ["docs"]
    assert call(f"{url}/collections")[1]["result"]["collections"] == [{"name": "docs"}]


def test_generic_health_paths(servers: list[ThreadingHTTPServer]) -> None:
    handler = generic.make_handler("grafana", "10.4.2", frozenset({"/api/health"}))
    url, server = serve(handler)
    servers.append(server)
    assert call(f"{url}/api/health")[1]["database"] == "ok"
    assert call(f"{url}/anything")[0] == 200
    handler.mode = _base.Mode("never-healthy")
    assert call(f"{url}/api/health")[0] == 503


def test_generic_port_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_STANDIN_PORT", "3000")
    assert generic.listen_port([]) == 3000
    assert generic.listen_port(["--web.listen-address=:9090"]) == 9090
    assert generic.listen_port(["--port", "81", "--unknown"]) == 81


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox not installed")
def test_curl_shim_on_busybox_wget(servers: list[ThreadingHTTPServer], tmp_path: Path) -> None:
    url = _vllm(servers, "--model", "m", "--api-key", "k")
    for name in ("wget", "sh"):
        (tmp_path / name).symlink_to("/bin/busybox")
    shim = tmp_path / "curl"
    shim.write_text(rootfs.CURL_SHIM)
    shim.chmod(0o755)
    env = {"PATH": str(tmp_path)}

    def curl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(tmp_path / "sh"), str(shim), *args], capture_output=True,
                              text=True, env=env, check=False, timeout=10)

    assert curl("-fsS", f"{url}/health").returncode == 0
    assert curl("-f", "-s", f"{url}/v1/models").returncode != 0  # 401
    out = tmp_path / "models.json"
    ok = curl("-fsSL", "-H", "Authorization: Bearer k", "-o", str(out), f"{url}/v1/models")
    assert ok.returncode == 0 and json.loads(out.read_text())["data"][0]["id"] == "m"
    assert curl("-fsS", "http://127.0.0.1:9/").returncode != 0


def test_entrypoint_runs_default_unless_a_program_is_named(tmp_path: Path) -> None:
    if not shutil.which("sh"):
        pytest.skip("no sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"swarm-entrypoint": rootfs.ENTRYPOINT, "swarm-faults": rootfs.FAULTS,
                       "prog": "#!/bin/sh\necho prog \"$@\"\n",
                       "other": "#!/bin/sh\necho other \"$@\"\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*args: str) -> str:
        return subprocess.run(["swarm-entrypoint", "prog", *args], capture_output=True,
                              text=True, env=env, check=True, timeout=10).stdout.strip()

    assert run() == "prog"
    assert run("--port", "1") == "prog --port 1"
    assert run("other", "x") == "other x"
    assert run("serve", "m") == "prog serve m"
    assert os.environ.get("SWARM_STANDIN_MODE") is None
