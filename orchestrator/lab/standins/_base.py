"""Shared plumbing for the lab's HTTP stand-ins: fault modes, JSON replies, serving.

Stand-ins run inside lab images as `python3 /opt/swarm-standin/<name>.py`, next to this
file, so they import it as a sibling module; stdlib only. Faults are staged with env
`SWARM_STANDIN_MODE`:

- `healthy` (default): serve normally.
- `never-healthy`: listen, but health endpoints answer 503 forever.
- `die-after:SECONDS`: serve, then exit 1 after SECONDS.
- `slow-start:SECONDS`: do not listen for SECONDS (a model loading), then serve.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODE_ENV = "SWARM_STANDIN_MODE"


@dataclass(frozen=True)
class Mode:
    """A parsed SWARM_STANDIN_MODE value."""

    kind: str = "healthy"
    seconds: float = 0.0

    @property
    def is_healthy(self) -> bool:
        return self.kind != "never-healthy"


def parse_mode(text: str | None) -> Mode:
    """Parse `healthy`, `never-healthy`, `die-after:N`, `slow-start:N`; bad values -> healthy."""
    value = (text or "healthy").strip()
    kind, _, seconds = value.partition(":")
    if kind in ("die-after", "slow-start"):
        try:
            return Mode(kind, max(0.0, float(seconds)))
        except ValueError:
            return Mode()
    if kind == "never-healthy":
        return Mode(kind)
    return Mode()


def current_mode() -> Mode:
    return parse_mode(os.environ.get(MODE_ENV))


def log(name: str, message: str) -> None:
    sys.stderr.write(f"{name}: {message}\n")
    sys.stderr.flush()


def exit_on_sigterm() -> None:
    """PID 1 in a container ignores SIGTERM unless a handler is installed."""

    def _stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def arm_die_after(mode: Mode, name: str) -> None:
    if mode.kind != "die-after":
        return

    def _die() -> None:
        log(name, f"die-after:{mode.seconds:g} reached, exiting 1")
        os._exit(1)

    timer = threading.Timer(mode.seconds, _die)
    timer.daemon = True
    timer.start()


def wait_slow_start(mode: Mode, name: str) -> None:
    if mode.kind == "slow-start" and mode.seconds > 0:
        log(name, f"slow start: listening in {mode.seconds:g}s")
        time.sleep(mode.seconds)


class Handler(BaseHTTPRequestHandler):
    """Base request handler with JSON helpers; subclasses implement `route`."""

    server_version = "swarm-standin/1"
    protocol_version = "HTTP/1.1"
    name = "standin"
    mode = Mode()

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        self._body_read = False
        try:
            self.route(method, path)
        except Exception as exc:  # a stand-in must keep serving
            self.send_json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def route(self, method: str, path: str) -> None:
        self.send_json(404, {"error": "not found"})

    def read_body(self) -> bytes:
        if getattr(self, "_body_read", False):
            return b""
        self._body_read = True
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def read_json(self) -> Any:
        body = self.read_body()
        return json.loads(body) if body else {}

    def send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self.read_body()  # an early answer (401, 503) drains the request's body: keep-alive stays in sync
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json")

    def send_text(self, status: int, text: str, content_type: str = "text/plain") -> None:
        self.send_bytes(status, text.encode(), f"{content_type}; charset=utf-8")

    def bearer_ok(self, key: str | None) -> bool:
        """True when no key is configured or the request carries `Bearer <key>`."""
        if not key:
            return True
        return self.headers.get("Authorization", "") == f"Bearer {key}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if os.environ.get("SWARM_STANDIN_VERBOSE"):
            log(self.name, format % args)


class Server(ThreadingHTTPServer):
    """A stand-in's HTTP server: a thread per request, and a listen backlog like a real
    server's (Go listens with the system's): the stdlib's 5 drops SYNs when a client opens
    several connections at once, and each drop costs the client a 1 s retransmit."""

    daemon_threads = True
    request_queue_size = 128


def serve(handler: type[Handler], host: str, port: int) -> None:
    """Apply the fault mode, then serve `handler` on host:port until SIGTERM."""
    mode = current_mode()
    handler.mode = mode
    exit_on_sigterm()
    wait_slow_start(mode, handler.name)
    server = Server((host, port), handler)
    arm_die_after(mode, handler.name)
    log(handler.name, f"listening on {host}:{port} mode={mode.kind}")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def port_from_listen_address(value: str, default: int) -> int:
    """`:9090`, `0.0.0.0:9090` or `9090` -> 9090."""
    tail = value.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else default
