"""vLLM OpenAI-server stand-in: the endpoints swarm's gates and clients use, no GPU.

Accepts vLLM's real command line (`--model`, `--port`, `--host`, `--served-model-name`,
`--max-model-len`, `--quantization`, `--kv-cache-dtype`, `--enable-prefix-caching`,
`--gpu-memory-utilization`, `--api-key`; unknown flags are ignored) and env
`VLLM_API_KEY`. Serves `/health`, `/version`, `/v1/models`, `/v1/chat/completions`,
`/v1/completions` and `/metrics`; `/v1/*` requires `Authorization: Bearer <key>` when a
key is set. Fault modes: see `_base.py`.

A `--model` that is a directory (the staged revision swarm mounts: docs/models.md) is loaded as
vLLM loads it before it listens: its `config.json` is read (missing or not JSON: exit 1, as vLLM
fails), then every safetensors shard its index names is read from disk; the time it took is
logged (`loaded N bytes in S s`), nothing is downloaded. A hub repository id is served as before.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from typing import Any

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]

VERSION = "0.6.3"


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
    args, _unknown = parser.parse_known_args(argv)
    args.model = args.model or args.model_positional or "facebook/opt-125m"
    args.api_key = args.api_key or os.environ.get("VLLM_API_KEY") or None
    args.served = args.served_model_name or [args.model]
    return args


class Stats:
    """Counters exported on /metrics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0

    def add(self, prompt: int, generated: int) -> None:
        with self.lock:
            self.requests += 1
            self.prompt_tokens += prompt
            self.generation_tokens += generated


def completion_text(messages: list[dict[str, Any]]) -> str:
    last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last.get("content", "")
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return f"[lab vLLM] you said: {str(content)[:200]}"


def make_handler(args: argparse.Namespace) -> type[_base.Handler]:
    stats = Stats()
    started = int(time.time())

    class VllmHandler(_base.Handler):
        name = "vllm-standin"

        def route(self, method: str, path: str) -> None:
            if path == "/health":
                return self.health()
            if path == "/version":
                return self.send_json(200, {"version": VERSION})
            if path == "/metrics":
                return self.metrics()
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
            data = [
                {
                    "id": name,
                    "object": "model",
                    "created": started,
                    "owned_by": "vllm",
                    "root": args.model,
                    "parent": None,
                    "max_model_len": args.max_model_len,
                }
                for name in args.served
            ]
            return {"object": "list", "data": data}

        def complete(self, path: str) -> None:
            body = self.read_json()
            model = body.get("model") or args.served[0]
            if model not in args.served:
                msg = f"The model `{model}` does not exist."
                return self.send_json(
                    404, {"object": "error", "message": msg, "type": "NotFoundError", "code": 404}
                )
            if path.endswith("chat/completions"):
                text = completion_text(body.get("messages") or [])
                choice: dict[str, Any] = {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
                kind = "chat.completion"
            else:
                text = f"[lab vLLM] {str(body.get('prompt', ''))[:200]}"
                choice = {"index": 0, "finish_reason": "stop", "text": text}
                kind = "text_completion"
            prompt_tokens, out_tokens = len(str(body).split()), len(text.split())
            stats.add(prompt_tokens, out_tokens)
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": out_tokens,
                "total_tokens": prompt_tokens + out_tokens,
            }
            self.send_json(
                200,
                {
                    "id": f"cmpl-{uuid.uuid4().hex}",
                    "object": kind,
                    "created": int(time.time()),
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
            )

        def metrics(self) -> None:
            name = args.served[0]
            lines = [
                "# TYPE vllm:num_requests_running gauge",
                f'vllm:num_requests_running{{model_name="{name}"}} 0.0',
                "# TYPE vllm:num_requests_waiting gauge",
                f'vllm:num_requests_waiting{{model_name="{name}"}} 0.0',
                "# TYPE vllm:gpu_cache_usage_perc gauge",
                f'vllm:gpu_cache_usage_perc{{model_name="{name}"}} 0.0',
                "# TYPE vllm:request_success_total counter",
                f'vllm:request_success_total{{model_name="{name}"}} {stats.requests}',
                "# TYPE vllm:prompt_tokens_total counter",
                f'vllm:prompt_tokens_total{{model_name="{name}"}} {stats.prompt_tokens}',
                "# TYPE vllm:generation_tokens_total counter",
                f'vllm:generation_tokens_total{{model_name="{name}"}} {stats.generation_tokens}',
            ]
            self.send_text(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")

    return VllmHandler


def load_model(path: str) -> dict[str, Any]:
    """Read the staged revision as vLLM would: config.json, then every shard (SystemExit if unusable)."""
    try:
        with open(os.path.join(path, "config.json")) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        _base.log("vllm-standin", f"cannot load {path}: config.json: {exc}")
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
    _base.log("vllm-standin", f"{config.get('architectures')} loaded {size} bytes in "
              f"{time.monotonic() - started:.2f} s from {path} (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')})")
    return dict(config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model.startswith("/"):
        load_model(args.model)
    _base.log(
        "vllm-standin",
        f"model={args.model} served={args.served} "
        f"max_model_len={args.max_model_len} quantization={args.quantization}",
    )
    _base.serve(make_handler(args), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
