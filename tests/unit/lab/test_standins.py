"""The HTTP stand-ins, served in-process on port 0, and the image shims."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
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


# ---------------------------------------------------------------- vLLM: streams, load, SIGTERM


def sse_events(url: str, body: dict[str, Any], key: str | None = None,
               timeout: float = 10) -> tuple[list[Any], bool]:
    """The `data:` payloads of a streamed completion, and whether it ended with [DONE]."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
    events: list[Any] = []
    with NO_PROXY.open(request, timeout=timeout) as reply:
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        for raw in reply:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                return events, True
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events, False


def test_vllm_streams_max_tokens_as_chat_chunks(servers: list[ThreadingHTTPServer],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vllm.RATE_ENV, "1000")
    url = _vllm(servers, "--model", "m", "--served-model-name", "mistral")
    events, done = sse_events(f"{url}/v1/chat/completions", {
        "model": "mistral", "stream": True, "max_tokens": 7, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hello there"}]})
    assert done
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "mistral" for e in events)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [e["choices"][0]["delta"]["content"] for e in events[1:-2]]
    assert len(content) == 7 and content[0] == "[lab "
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["usage"]["completion_tokens"] == 7 and events[-1]["choices"] == []


def test_vllm_counts_requests_running_while_it_generates(servers: list[ThreadingHTTPServer],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vllm.RATE_ENV, "20")
    url = _vllm(servers, "--model", "m")
    body = {"model": "m", "stream": True, "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]}
    threads = [threading.Thread(target=sse_events, args=(f"{url}/v1/chat/completions", body)) for _ in range(3)]
    for t in threads:
        t.start()
    running, deadline = 0.0, time.monotonic() + 5
    while running < 3 and time.monotonic() < deadline:  # the three are each a second long at 20 tokens/s
        running = _metric(call(f"{url}/metrics")[1], "vllm:num_requests_running")
    for t in threads:
        t.join()
    deadline = time.monotonic() + 5  # the server ends its count once its thread is done writing
    while _metric(after := call(f"{url}/metrics")[1], "vllm:num_requests_running") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running == 3.0
    assert _metric(after, "vllm:num_requests_running") == 0.0
    assert _metric(after, "vllm:generation_tokens_total") == 60.0


def _metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def test_vllm_answers_404_for_a_model_it_does_not_serve_when_streaming(servers: list[ThreadingHTTPServer]) -> None:
    url = _vllm(servers, "--model", "m")
    status, body = call(f"{url}/v1/chat/completions", {"model": "other", "stream": True, "messages": []})
    assert status == 404 and "`other` does not exist" in body["message"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    script = Path(vllm.__file__)
    proc = subprocess.Popen([sys.executable, str(script), "--model", "m", "--host", "127.0.0.1",
                             "--port", str(port), *argv], cwd=script.parent, text=True,
                            stderr=subprocess.PIPE, env={**os.environ, vllm.RATE_ENV: "10", **(env or {})})
    return proc, f"http://127.0.0.1:{port}"


def _wait_in_flight(url: str, within: float = 5) -> None:
    """Until the server counts the one stream as running (a fixed sleep raced a loaded machine)."""
    deadline = time.monotonic() + within
    while _metric(call(f"{url}/metrics")[1], "vllm:num_requests_running") != 1.0:
        assert time.monotonic() < deadline, "the stream never reached the server"
        time.sleep(0.02)


def _wait_serving(url: str, within: float = 10) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            if call(f"{url}/health")[0] == 200:
                return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never served")


def _stream_in_thread(url: str, tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def run() -> None:
        body = {"model": "m", "stream": True, "max_tokens": tokens, "messages": [{"role": "user", "content": "x"}]}
        try:
            events, done = sse_events(f"{url}/v1/chat/completions", body, timeout=20)
            out.update(tokens=len(events) - 2, done=done)
        except (OSError, http.client.HTTPException) as exc:
            out.update(error=type(exc).__name__)

    thread = threading.Thread(target=run)
    thread.start()
    out["thread"] = thread
    return out


def test_vllm_sigterm_without_a_grace_cuts_the_streams_in_flight(tmp_path: Path) -> None:
    proc, url = _start(tmp_path)
    try:
        _wait_serving(url)
        stream = _stream_in_thread(url, 30)  # 3 s at 10 tokens/s
        _wait_in_flight(url)
        proc.send_signal(signal.SIGTERM)
        stream["thread"].join(10)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    assert not stream.get("done"), stream
    assert "aborted" in (proc.stderr.read() if proc.stderr else "")


def test_vllm_sigterm_with_a_shutdown_timeout_finishes_the_streams_and_refuses_new_ones(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, "--shutdown-timeout", "10")
    try:
        _wait_serving(url)
        stream = _stream_in_thread(url, 20)  # 2 s at 10 tokens/s
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(urllib.error.URLError):  # the port is closed: refused, not reset mid-answer
            call(f"{url}/health")
        stream["thread"].join(10)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    assert stream.get("done") and stream.get("tokens") == 20, stream


def test_vllm_refuses_connections_while_the_model_loads(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, env={vllm.LOAD_ENV: "1.5"})
    try:
        with pytest.raises(urllib.error.URLError):
            call(f"{url}/health")
        waited = _wait_serving(url)
    finally:
        proc.kill()
    assert waited > 0.5


def test_vllm_can_answer_503_while_the_model_loads(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, env={vllm.LOAD_ENV: "1.5", vllm.LOAD_MODE_ENV: "503"})
    try:
        deadline = time.monotonic() + 5
        status = None
        while status is None and time.monotonic() < deadline:
            try:
                status = call(f"{url}/health")[0]
            except urllib.error.URLError:
                time.sleep(0.05)
        assert status == 503
        _wait_serving(url)
    finally:
        proc.kill()
