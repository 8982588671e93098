"""Ollama stand-in: the HTTP API of `ollama serve` on 11434 and the `ollama` CLI, no model.

The real server cannot run here (no GPU, and models come from ollama.com at `ollama pull`).
This one answers the endpoints as Ollama's API reference documents them
(github.com/ollama/ollama docs/api.md, docs/openai.md):

- `GET /` -> `Ollama is running`; `GET /api/version` -> `{"version": ...}`;
- `GET /api/tags` -> `{"models": [{name, model, modified_at, size, digest, details}]}`,
  the models pulled so far (kept in `$OLLAMA_MODELS/manifest.json`, on the volume);
- `POST /api/pull` `{"model"|"name"}` -> records the model, answers `{"status": "success"}`
  (a stream of status objects unless `"stream": false`);
- `POST /api/show` -> `{modelfile, parameters, template, details, model_info}`;
- `POST /api/generate` `{model, prompt, stream}` and `POST /api/chat` `{model, messages,
  stream}` -> one object (`"stream": false`) or newline-delimited JSON objects, the last with
  `done: true`, `done_reason`, `total_duration`, `prompt_eval_count`, `eval_count`, ...;
  an unknown model is 404 `{"error": "model \"x\" not found, try pulling it first"}`;
- OpenAI compatibility: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`
  (SSE `data:` lines ending in `data: [DONE]` when `stream` is true).

Answers are canned text naming the model and echoing the prompt: no tokens are generated.
Listens on `$OLLAMA_HOST` (the image sets 0.0.0.0:11434, as the official image does).
CLI: `ollama serve`, `ollama pull NAME`, `ollama list`, `ollama -v`. Fault modes: `_base.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]

VERSION = "0.5.7"
DEFAULT_HOST = "0.0.0.0:11434"


def host_port(value: str | None) -> tuple[str, int]:
    """`OLLAMA_HOST` as Ollama reads it: `host:port`, `host` (port 11434) or `:port`."""
    text = (value or DEFAULT_HOST).split("://", 1)[-1].strip("/")
    host, sep, port = text.rpartition(":")
    if not sep:
        return text or "0.0.0.0", 11434
    return host or "0.0.0.0", int(port) if port.isdigit() else 11434


def full_name(name: str) -> str:
    """Model names default to the `latest` tag (docs/api.md, Conventions)."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class Store:
    """The pulled models, persisted in a manifest under the models directory."""

    def __init__(self, root: Path) -> None:
        self.path = root / "manifest.json"
        self.lock = threading.Lock()

    def models(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def add(self, name: str) -> dict[str, Any]:
        with self.lock:
            models = self.models()
            entry = models.get(full_name(name)) or describe(full_name(name))
            models[full_name(name)] = entry
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(models, indent=2))
            tmp.replace(self.path)
            return entry

    def get(self, name: str) -> dict[str, Any] | None:
        return self.models().get(full_name(name))


def describe(name: str) -> dict[str, Any]:
    family = name.split(":", 1)[0].rsplit("/", 1)[-1].rstrip("0123456789.") or "llama"
    digest = hashlib.sha256(name.encode()).hexdigest()
    return {"name": name, "model": name, "modified_at": _now(), "size": 4_661_224_676,
            "digest": digest,
            "details": {"parent_model": "", "format": "gguf", "family": family,
                        "families": [family], "parameter_size": "8.0B",
                        "quantization_level": "Q4_0"}}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


def answer(model: str, text: str) -> str:
    return f"[lab Ollama {model}] you said: {text[:200]}"


def last_user_text(messages: list[dict[str, Any]]) -> str:
    last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    return str(last.get("content", ""))


def timings(prompt: str, reply: str) -> dict[str, Any]:
    prompt_n, reply_n = max(1, len(prompt.split())), max(1, len(reply.split()))
    return {"total_duration": 5_000_000, "load_duration": 1_000_000,
            "prompt_eval_count": prompt_n, "prompt_eval_duration": 1_000_000,
            "eval_count": reply_n, "eval_duration": 3_000_000}


def make_handler(store: Store) -> type[_base.Handler]:
    class OllamaHandler(_base.Handler):
        name = "ollama-standin"

        def route(self, method: str, path: str) -> None:
            if path == "/" and method in ("GET", "HEAD"):
                return self.send_text(200, "Ollama is running")
            if not self.mode.is_healthy:
                return self.send_json(503, {"error": "server busy"})
            routes = {("GET", "/api/version"): self.version, ("GET", "/api/tags"): self.tags,
                      ("POST", "/api/pull"): self.pull, ("POST", "/api/show"): self.show,
                      ("POST", "/api/generate"): self.generate, ("POST", "/api/chat"): self.chat,
                      ("GET", "/v1/models"): self.openai_models,
                      ("POST", "/v1/chat/completions"): self.openai_chat,
                      ("POST", "/v1/completions"): self.openai_completion}
            handler = routes.get(("GET" if method == "HEAD" else method, path))
            if handler is None:
                return self.send_text(404, "404 page not found")
            handler()

        def version(self) -> None:
            self.send_json(200, {"version": VERSION})

        def tags(self) -> None:
            self.send_json(200, {"models": list(store.models().values())})

        def pull(self) -> None:
            body = self.read_json()
            name = str(body.get("model") or body.get("name") or "")
            if not name:
                return self.send_json(400, {"error": "model is required"})
            entry = store.add(name)
            done = {"status": "success"}
            if body.get("stream") is False:
                return self.send_json(200, done)
            steps = [{"status": "pulling manifest"},
                     {"status": f"pulling {entry['digest'][:12]}", "digest": f"sha256:{entry['digest']}",
                      "total": entry["size"], "completed": entry["size"]},
                     {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, done]
            self.send_stream(steps)

        def show(self) -> None:
            body = self.read_json()
            entry = self.known(str(body.get("model") or body.get("name") or ""))
            if entry is None:
                return None
            self.send_json(200, {"modelfile": f"FROM {entry['name']}\n", "parameters": "",
                                 "template": "{{ .Prompt }}", "details": entry["details"],
                                 "model_info": {"general.architecture": entry["details"]["family"],
                                                "general.parameter_count": 8_030_261_248}})

        def known(self, name: str) -> dict[str, Any] | None:
            entry = store.get(name) if name else None
            if entry is None:
                self.send_json(404, {"error": f'model "{name}" not found, try pulling it first'})
            return entry

        def generate(self) -> None:
            body = self.read_json()
            entry = self.known(str(body.get("model") or ""))
            if entry is None:
                return
            prompt = str(body.get("prompt") or "")
            reply = answer(entry["name"], prompt)
            final = {"model": entry["name"], "created_at": _now(), "response": reply, "done": True,
                     "done_reason": "stop", "context": [1, 2, 3], **timings(prompt, reply)}
            if body.get("stream") is False:
                return self.send_json(200, final)
            chunks = [{"model": entry["name"], "created_at": _now(), "response": word + " ",
                       "done": False} for word in reply.split()]
            self.send_stream([*chunks, {**final, "response": ""}])

        def chat(self) -> None:
            body = self.read_json()
            entry = self.known(str(body.get("model") or ""))
            if entry is None:
                return
            prompt = last_user_text(list(body.get("messages") or []))
            reply = answer(entry["name"], prompt)
            final = {"model": entry["name"], "created_at": _now(),
                     "message": {"role": "assistant", "content": reply}, "done": True,
                     "done_reason": "stop", **timings(prompt, reply)}
            if body.get("stream") is False:
                return self.send_json(200, final)
            chunks = [{"model": entry["name"], "created_at": _now(),
                       "message": {"role": "assistant", "content": word + " "}, "done": False}
                      for word in reply.split()]
            self.send_stream([*chunks, {**final, "message": {"role": "assistant", "content": ""}}])

        def send_stream(self, objects: list[dict[str, Any]]) -> None:
            body = "".join(json.dumps(o) + "\n" for o in objects).encode()
            self.send_bytes(200, body, "application/x-ndjson")

        def openai_models(self) -> None:
            data = [{"id": name, "object": "model", "created": int(time.time()),
                     "owned_by": "library"} for name in store.models()]
            self.send_json(200, {"object": "list", "data": data})

        def openai_chat(self) -> None:
            body = self.read_json()
            self.openai_reply(body, last_user_text(list(body.get("messages") or [])), chat=True)

        def openai_completion(self) -> None:
            body = self.read_json()
            self.openai_reply(body, str(body.get("prompt") or ""), chat=False)

        def openai_reply(self, body: dict[str, Any], prompt: str, chat: bool) -> None:
            name = str(body.get("model") or "")
            entry = store.get(name)
            if entry is None:
                return self.send_json(404, {"error": {
                    "message": f'model "{name}" not found, try pulling it first',
                    "type": "api_error", "param": None, "code": None}})
            reply = answer(entry["name"], prompt)
            n_in, n_out = timings(prompt, reply)["prompt_eval_count"], len(reply.split())
            choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": reply},
                                       "finish_reason": "stop"} if chat else
                                      {"index": 0, "text": reply, "finish_reason": "stop"})
            out = {"id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
                   "object": "chat.completion" if chat else "text_completion",
                   "created": int(time.time()), "model": name, "system_fingerprint": "fp_ollama",
                   "choices": [choice],
                   "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                             "total_tokens": n_in + n_out}}
            if not body.get("stream"):
                return self.send_json(200, out)
            delta = ({"index": 0, "delta": {"role": "assistant", "content": reply},
                      "finish_reason": "stop"} if chat else choice)
            chunk = {**out, "object": "chat.completion.chunk" if chat else "text_completion",
                     "choices": [delta]}
            chunk.pop("usage")
            text = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
            self.send_bytes(200, text.encode(), "text/event-stream")

    return OllamaHandler


def models_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def client_url(path: str) -> str:
    host, port = host_port(os.environ.get("OLLAMA_HOST"))
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{port}{path}"


def _request(path: str, payload: dict[str, Any] | None = None) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(client_url(path), data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def cli(argv: list[str]) -> int:
    """The `ollama` command line: serve, pull, list, -v."""
    command = argv[0] if argv else "serve"
    if command in ("-v", "--version", "version"):
        print(f"ollama version is {VERSION}")  # noqa: T201
        return 0
    if command == "serve":
        host, port = host_port(os.environ.get("OLLAMA_HOST"))
        _base.serve(make_handler(Store(models_dir())), host, port)
        return 0
    try:
        if command == "pull" and len(argv) > 1:
            _request("/api/pull", {"model": argv[1], "stream": False})
            print("success")  # noqa: T201
            return 0
        if command in ("list", "ls"):
            print("NAME\tID\tSIZE\tMODIFIED")  # noqa: T201
            for model in _request("/api/tags").get("models", []):
                print(f"{model['name']}\t{model['digest'][:12]}\t4.7 GB\t{model['modified_at']}")  # noqa: T201
            return 0
    except OSError as exc:
        sys.stderr.write(f"Error: could not connect to ollama app, is it running? ({exc})\n")
        return 1
    sys.stderr.write(f"Error: unknown command {command!r} for \"ollama\"\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(cli(sys.argv[1:]))
