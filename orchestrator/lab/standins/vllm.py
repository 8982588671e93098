"""vLLM OpenAI-server stand-in: the endpoints swarm's gates and clients use, no GPU — and the
parts of vLLM's behaviour a rollout can lose requests on.

Accepts vLLM's real command line (`--model`, `--port`, `--host`, `--served-model-name`,
`--max-model-len`, `--quantization`, `--kv-cache-dtype`, `--enable-prefix-caching`,
`--gpu-memory-utilization`, `--api-key`, `--shutdown-timeout`; unknown flags are ignored) and
env `VLLM_API_KEY`. Serves `/health`, `/version`, `/v1/models`, `/v1/chat/completions`,
`/v1/completions` and `/metrics`; `/v1/*` requires `Authorization: Bearer <key>` when a key
is set, and a request naming a model the server does not serve is a 404 (as vLLM answers).

What it models of a real server, because a rollout is judged on it:

* **Generation takes time.** Every answer is `max_tokens` tokens (`max_completion_tokens`
  too; without either, the canned reply), produced at `SWARM_VLLM_TOKEN_RATE` tokens a
  second (default 50). `"stream": true` sends them as server-sent events in OpenAI's
  `chat.completion.chunk` / `text_completion` format, one token a chunk, then `data: [DONE]`
  (with `stream_options.include_usage`, a usage chunk first). Requests being generated are
  `vllm:num_requests_running` on `/metrics`.
* **Loading takes time.** For `SWARM_VLLM_LOAD_S` seconds (or the lab's `slow-start:S`
  mode) the model "loads": vLLM 0.6.3 binds its port before it loads the engine but only
  accepts once the engine is up, so connections are refused; with
  `SWARM_VLLM_LOAD_MODE=503` it listens and answers 503 instead (health included).
* **SIGTERM is vLLM's.** Without `--shutdown-timeout` (vLLM 0.6.3, and the default of the
  versions that have the flag, v0.18.0 on) a SIGTERM aborts every request in flight: open
  streams are cut. With `--shutdown-timeout S` it stops accepting (the port closes, a request
  on an open connection gets 503), lets the requests in flight finish for up to S seconds,
  aborts what is left and exits.

A `--model` that is a directory (the staged revision swarm mounts: docs/models.md) is loaded as
vLLM loads it before it listens: its `config.json` is read (missing or not JSON: exit 1, as vLLM
fails), then every safetensors shard its index names is read from disk; the time it took is
logged (`loaded N bytes in S s`), nothing is downloaded. A hub repository id is served as before.

Fault modes (`SWARM_STANDIN_MODE`): see `_base.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]

VERSION = "0.6.3"
NAME = "vllm-standin"
RATE_ENV = "SWARM_VLLM_TOKEN_RATE"
LOAD_ENV = "SWARM_VLLM_LOAD_S"
LOAD_MODE_ENV = "SWARM_VLLM_LOAD_MODE"
DEFAULT_RATE = 50.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm-standin", add_help=False)
    parser.add_argument("model_positional", nargs="?", default=None)  # `vllm serve MODEL`
    parser.add_argument("--model", default=None)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--kv-cache-dtype", default="auto")
    parser.add_argument("--enable-prefix-caching", action="store_true")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--shutdown-timeout", type=float, default=0.0)
    args, _unknown = parser.parse_known_args(argv)
    args.model = args.model or args.model_positional or "facebook/opt-125m"
    args.api_key = args.api_key or os.environ.get("VLLM_API_KEY") or None
    args.served = args.served_model_name or [args.model]
    args.token_rate = _env_float(RATE_ENV, DEFAULT_RATE)
    return args


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


class Engine:
    """What the server is doing: loading, serving, shutting down; counters for /metrics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded = threading.Event()
        self.loaded.set()
        self.stopping = threading.Event()
        self.running = 0
        self.requests = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0

    def begin(self) -> None:
        with self.lock:
            self.running += 1

    def end(self, prompt: int, generated: int, *, finished: bool) -> None:
        with self.lock:
            self.running -= 1
            self.prompt_tokens += prompt
            self.generation_tokens += generated
            self.requests += 1 if finished else 0

    def in_flight(self) -> int:
        with self.lock:
            return self.running


def completion_text(messages: list[dict[str, Any]]) -> str:
    last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last.get("content", "")
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return f"[lab vLLM] you said: {str(content)[:200]}"


def tokens_for(text: str, max_tokens: int | None) -> list[str]:
    """The answer as tokens: the canned text's words, cycled up to max_tokens when it is set."""
    words = [f"{w} " for w in text.split()] or ["ok "]
    if max_tokens is None:
        return words
    return [words[i % len(words)] for i in range(max(0, max_tokens))]


def requested_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def make_handler(args: argparse.Namespace, engine: Engine | None = None) -> type[_base.Handler]:
    state = engine or Engine()
    started = int(time.time())

    class VllmHandler(_base.Handler):
        name = NAME

        def route(self, method: str, path: str) -> None:
            if path == "/metrics":
                return self.metrics()
            if state.stopping.is_set() or not state.loaded.is_set():
                self.close_connection = state.stopping.is_set()
                return self.send_json(503, {"detail": "engine not ready"})
            if path == "/health":
                return self.health()
            if path == "/version":
                return self.send_json(200, {"version": VERSION})
            if path.startswith("/v1/"):
                return self.api(method, path)
            self.send_json(404, {"detail": "Not Found"})

        def health(self) -> None:
            if self.mode.is_healthy:
                return self.send_bytes(200, b"", "application/json")
            self.send_json(503, {"detail": "engine not ready"})

        def api(self, method: str, path: str) -> None:
            if not self.bearer_ok(args.api_key):
                return self.send_json(401, {"error": "Unauthorized"})
            if not self.mode.is_healthy:
                return self.send_json(503, {"detail": "engine not ready"})
            if path == "/v1/models" and method in ("GET", "HEAD"):
                return self.send_json(200, self.models())
            if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
                return self.complete(path)
            self.send_json(404, {"detail": "Not Found"})

        def models(self) -> dict[str, Any]:
            data = [{"id": name, "object": "model", "created": started, "owned_by": "vllm",
                     "root": args.model, "parent": None, "max_model_len": args.max_model_len}
                    for name in args.served]
            return {"object": "list", "data": data}

        def complete(self, path: str) -> None:
            body = self.read_json()
            model = body.get("model") or args.served[0]
            if model not in args.served:
                msg = f"The model `{model}` does not exist."
                return self.send_json(404, {"object": "error", "message": msg, "type": "NotFoundError",
                                            "code": 404})
            chat = path.endswith("chat/completions")
            text = completion_text(body.get("messages") or []) if chat else \
                f"[lab vLLM] {str(body.get('prompt', ''))[:200]}"
            limit = requested_tokens(body)
            answer = Answer(model=model, chat=chat, tokens=tokens_for(text, limit),
                            prompt_tokens=len(json.dumps(body).split()),
                            finish="length" if limit is not None else "stop")
            state.begin()
            generated, finished = 0, False
            try:
                if body.get("stream"):
                    usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    generated = self.stream(answer, usage)
                else:
                    generated = self.whole(answer)
                finished = True
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away: its request ends here
            finally:
                state.end(answer.prompt_tokens, generated, finished=finished)

        def pace(self, index: int, since: float) -> None:
            """Wait until token `index` is due at the engine's rate (what a GPU decode step costs)."""
            due = since + (index + 1) / args.token_rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)

        def whole(self, answer: Answer) -> int:
            since = time.monotonic()
            for i in range(len(answer.tokens)):
                self.pace(i, since)
            self.send_json(200, answer.document())
            return len(answer.tokens)

        def stream(self, answer: Answer, usage: bool) -> int:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            since = time.monotonic()
            for event in answer.events(usage, on_token=lambda i: self.pace(i, since)):
                self._chunk(f"data: {event}\n\n".encode())
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
            return len(answer.tokens)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def metrics(self) -> None:
            name = args.served[0]
            labels = f'{{model_name="{name}"}}'
            lines = [
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{labels} {float(state.in_flight())}",
                "# TYPE vllm:num_requests_waiting gauge",
                f"vllm:num_requests_waiting{labels} 0.0",
                "# TYPE vllm:gpu_cache_usage_perc gauge",
                f"vllm:gpu_cache_usage_perc{labels} 0.0",
                "# TYPE vllm:request_success_total counter",
                f"vllm:request_success_total{labels} {state.requests}",
                "# TYPE vllm:prompt_tokens_total counter",
                f"vllm:prompt_tokens_total{labels} {state.prompt_tokens}",
                "# TYPE vllm:generation_tokens_total counter",
                f"vllm:generation_tokens_total{labels} {state.generation_tokens}",
            ]
            self.send_text(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")

    VllmHandler.engine = state  # type: ignore[attr-defined]
    return VllmHandler


class Answer:
    """One completion: its tokens and the OpenAI documents that carry them."""

    def __init__(self, *, model: str, chat: bool, tokens: list[str], prompt_tokens: int,
                 finish: str) -> None:
        self.model, self.chat, self.tokens = model, chat, tokens
        self.prompt_tokens, self.finish = prompt_tokens, finish
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": len(self.tokens),
                "total_tokens": self.prompt_tokens + len(self.tokens)}

    def document(self) -> dict[str, Any]:
        text = "".join(self.tokens).rstrip()
        choice: dict[str, Any] = ({"index": 0, "finish_reason": self.finish,
                                   "message": {"role": "assistant", "content": text}} if self.chat
                                  else {"index": 0, "finish_reason": self.finish, "text": text})
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice], "usage": self.usage()}

    def events(self, usage: bool, on_token: Any) -> Iterator[str]:
        """The stream's `data:` payloads: vLLM's role chunk, one chunk a token, the finish, usage."""
        if self.chat:
            yield self._chunk({"role": "assistant", "content": ""}, None)
        for i, token in enumerate(self.tokens):
            on_token(i)
            yield self._chunk({"content": token}, None)
        yield self._chunk({}, self.finish)
        if usage:
            yield json.dumps({"id": self.id, "object": self._object(), "created": self.created,
                              "model": self.model, "choices": [], "usage": self.usage()})

    def _object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> str:
        choice: dict[str, Any] = ({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                                  if self.chat else
                                  {"index": 0, "text": delta.get("content", ""), "logprobs": None,
                                   "finish_reason": finish})
        return json.dumps({"id": self.id, "object": self._object(), "created": self.created,
                           "model": self.model, "choices": [choice]})


# ---------------------------------------------------------------- the process


def load_seconds(mode: _base.Mode) -> float:
    if mode.kind == "slow-start":
        return mode.seconds
    return max(0.0, _env_float(LOAD_ENV, 0.0)) if os.environ.get(LOAD_ENV) else 0.0


def serve(args: argparse.Namespace) -> None:
    """Load, serve, and on SIGTERM shut down as vLLM does (see the module docstring)."""
    mode = _base.current_mode()
    engine = Engine()
    handler = make_handler(args, engine)
    handler.mode = mode
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    loading = load_seconds(mode)
    server: ThreadingHTTPServer | None = None
    if loading and os.environ.get(LOAD_MODE_ENV) == "503":
        engine.loaded.clear()
        server = _listen(handler, args)
    elif loading:
        _base.log(NAME, f"loading the model: port closed for {loading:g}s")
    if stop.wait(loading):
        return  # SIGTERM while loading: vLLM stops there
    engine.loaded.set()
    server = server or _listen(handler, args)
    _base.arm_die_after(mode, NAME)
    _base.log(NAME, f"serving on {args.host}:{args.port} mode={mode.kind} rate={args.token_rate:g} tok/s")
    stop.wait()
    shut_down(server, engine, args.shutdown_timeout)


def _listen(handler: type[_base.Handler], args: argparse.Namespace) -> ThreadingHTTPServer:
    server = _base.Server((args.host, args.port), handler)
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    return server


def shut_down(server: ThreadingHTTPServer, engine: Engine, grace: float) -> None:
    """Stop accepting, let requests in flight finish within `grace`, abort the rest."""
    engine.stopping.set()
    server.shutdown()
    try:
        server.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    server.socket.close()
    deadline = time.monotonic() + grace
    while engine.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = engine.in_flight()
    _base.log(NAME, f"shutting down: {left} request(s) aborted" if left else "shutting down: nothing in flight")
    os._exit(0)  # the daemon threads still streaming are cut, as vLLM aborts its requests


def load_model(path: str) -> dict[str, Any]:
    """Read the staged revision as vLLM would: config.json, then every shard (SystemExit if unusable)."""
    try:
        with open(os.path.join(path, "config.json")) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        _base.log(NAME, f"cannot load {path}: config.json: {exc}")
        raise SystemExit(1) from None
    started, size = time.monotonic(), 0
    index = os.path.join(path, "model.safetensors.index.json")
    shards: list[str] = []
    if os.path.exists(index):
        with open(index) as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
    for shard in shards:
        with open(os.path.join(path, shard), "rb") as handle:
            while chunk := handle.read(1 << 20):
                size += len(chunk)
    _base.log(NAME, f"{config.get('architectures')} loaded {size} bytes in "
                    f"{time.monotonic() - started:.2f} s from {path} (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')})")
    return dict(config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _base.log(NAME, f"model={args.model} served={args.served} max_model_len={args.max_model_len} "
                    f"quantization={args.quantization} shutdown_timeout={args.shutdown_timeout:g}")
    if args.model.startswith("/"):
        load_model(args.model)
    serve(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
