"""LiteLLM proxy stand-in: health endpoints, model list, chat completions proxied upstream.

Command line as the real image: `--config /app/config.yaml --port 4000` (unknown flags
ignored). The config's `model_list` names the models; a chat request goes to the
`litellm_params.api_base` of the model it names (else the first one), with that model's
`api_key` (`os.environ/VAR` resolved from env) and the provider prefix stripped from
`litellm_params.model`. The master key comes from `general_settings.master_key` or env
`LITELLM_MASTER_KEY`. stdlib only: the config is read with a small YAML-subset parser.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]

VERSION = "1.55.8"


# --- a YAML subset: block maps, block lists, flow lists, scalars, comments ---------------


def _scalar(text: str) -> Any:
    text = text.strip()
    if not text or text in ("~", "null", "Null", "NULL"):
        return None
    if text[0] in "\"'" and text[-1] == text[0] and len(text) >= 2:
        return text[1:-1]
    if text[0] == "[" and text[-1] == "]":
        inner = text[1:-1].strip()
        return [_scalar(part) for part in inner.split(",")] if inner else []
    if text[0] == "{" and text[-1] == "}":
        inner = text[1:-1].strip()
        pairs = [p.split(":", 1) for p in inner.split(",") if ":" in p]
        return {k.strip(): _scalar(v) for k, v in pairs}
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if ch in "\"'" and not quote:
            quote = ch
        elif ch == quote:
            quote = ""
        elif ch == "#" and not quote and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if line.strip() and line.strip() != "---":
            out.append((len(line) - len(line.lstrip(" ")), line.strip()))
    return out


def _block(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[Any, int]:
    if pos < len(lines) and lines[pos][1].startswith("- "):
        return _seq(lines, pos, lines[pos][0])
    return _map(lines, pos, indent)


def _seq(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("-"):
        rest = lines[pos][1][1:].strip()
        if not rest:
            value, pos = _block(lines, pos + 1, indent + 1)
        elif ":" in rest and not rest.startswith(("'", '"', "[", "{")):
            inner = indent + 2
            lines[pos] = (inner, rest)  # re-read "key: v" as the item's first map line
            value, pos = _map(lines, pos, inner)
        else:
            value, pos = _scalar(rest), pos + 1
        items.append(value)
    return items, pos


def _map(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    base = lines[pos][0] if pos < len(lines) else indent
    while pos < len(lines) and lines[pos][0] == base and not lines[pos][1].startswith("- "):
        key, _, rest = lines[pos][1].partition(":")
        key = key.strip().strip("\"'")
        pos += 1
        if rest.strip():
            out[key] = _scalar(rest)
        elif pos < len(lines) and (lines[pos][0] > base or lines[pos][1].startswith("- ")):
            out[key], pos = _block(lines, pos, lines[pos][0])
        else:
            out[key] = None
    return out, pos


def load_yaml(text: str) -> Any:
    """Parse the YAML subset LiteLLM configs use (JSON is YAML too)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return json.loads(stripped)
    lines = _lines(text)
    return _block(lines, 0, 0)[0] if lines else {}


# --- the proxy ---------------------------------------------------------------------------


def resolve_env(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("os.environ/"):
        return os.environ.get(value.split("/", 1)[1])
    return value


def upstream_model(litellm_model: str) -> str:
    """`openai/Qwen/Qwen2.5-7B` -> `Qwen/Qwen2.5-7B`; `hosted_vllm/x` -> `x`."""
    prefixes = ("openai/", "hosted_vllm/", "vllm/", "ollama/", "ollama_chat/")
    for prefix in prefixes:
        if litellm_model.startswith(prefix):
            return litellm_model[len(prefix) :]
    return litellm_model


def pick_model(models: list[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    for entry in models:
        if entry.get("model_name") == name:
            return entry
    return models[0] if models else None


def forward(entry: dict[str, Any], body: dict[str, Any], timeout: float) -> tuple[int, bytes]:
    params = entry.get("litellm_params") or {}
    base = str(resolve_env(params.get("api_base")) or "").rstrip("/")
    if not base:
        return 500, json.dumps({"error": {"message": "model has no api_base"}}).encode()
    payload = dict(body, model=upstream_model(str(params.get("model", entry.get("model_name")))))
    request = urllib.request.Request(
        f"{base}/chat/completions",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    key = resolve_env(params.get("api_key"))
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        err = {"error": {"message": f"upstream {base} unreachable: {exc}", "code": 502}}
        return 502, json.dumps(err).encode()


def make_handler(config: dict[str, Any], master_key: str | None) -> type[_base.Handler]:
    models: list[dict[str, Any]] = list(config.get("model_list") or [])
    timeout = float((config.get("litellm_settings") or {}).get("request_timeout") or 60)

    class LiteLLMHandler(_base.Handler):
        name = "litellm-standin"

        def route(self, method: str, path: str) -> None:
            if path in ("/health/liveliness", "/health/liveness"):
                return self.liveliness()
            if path == "/health/readiness":
                return self.readiness()
            if not self.bearer_ok(master_key):
                err = {"error": {"message": "Authentication Error", "code": "401"}}
                return self.send_json(401, err)
            if path in ("/v1/models", "/models"):
                data = [
                    {
                        "id": m.get("model_name"),
                        "object": "model",
                        "created": 0,
                        "owned_by": "openai",
                    }
                    for m in models
                ]
                return self.send_json(200, {"object": "list", "data": data})
            if path in ("/v1/chat/completions", "/chat/completions") and method == "POST":
                return self.chat()
            self.send_json(404, {"detail": "Not Found"})

        def liveliness(self) -> None:
            if self.mode.is_healthy:
                return self.send_json(200, "I'm alive!")
            self.send_json(503, {"error": "not alive"})

        def readiness(self) -> None:
            if not self.mode.is_healthy:
                return self.send_json(503, {"status": "unhealthy"})
            db = "connected" if os.environ.get("DATABASE_URL") else "Not connected"
            self.send_json(
                200,
                {
                    "status": "healthy",
                    "db": db,
                    "cache": None,
                    "litellm_version": VERSION,
                    "success_callbacks": [],
                },
            )

        def chat(self) -> None:
            body = self.read_json()
            entry = pick_model(models, body.get("model"))
            if entry is None:
                return self.send_json(400, {"error": {"message": "no models configured"}})
            status, payload = forward(entry, body, timeout)
            self.send_bytes(status, payload, "application/json")

    return LiteLLMHandler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litellm-standin", add_help=False)
    parser.add_argument("--config", "-c", default=None)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "4000")))
    parser.add_argument("--host", default="0.0.0.0")
    args, _unknown = parser.parse_known_args(argv)
    config: dict[str, Any] = {}
    if args.config:
        config = load_yaml(Path(args.config).read_text()) or {}
    settings = config.get("general_settings") or {}
    master_key = resolve_env(settings.get("master_key")) or os.environ.get("LITELLM_MASTER_KEY")
    _base.log("litellm-standin", f"{len(config.get('model_list') or [])} model(s) configured")
    _base.serve(make_handler(config, master_key or None), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
