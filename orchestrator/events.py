"""Events, not prints: one typed stream that the console view, JSON output and audit log render.

Every event passes through `secrets.scrub` on its way out, so a secret value that slipped
into a message is masked in every renderer.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from orchestrator.secrets import scrub

States = ("start", "ok", "changed", "unchanged", "waiting", "failed", "skipped", "info", "rolled-back")


@dataclass(frozen=True)
class Event:
    kind: str                 # run, connect, facts, lock, upload, apply, gate, probe, switch, rollback, consul, ...
    state: str                # one of States
    host: str | None = None
    phase: int | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return scrub(json.dumps(asdict(self), default=str, sort_keys=True))


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self.history: list[Event] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, kind: str, state: str, *, host: str | None = None, phase: int | None = None,
             message: str = "", **data: Any) -> Event:
        event = Event(kind=kind, state=state, host=host, phase=phase, message=scrub(message), data=data)
        with self._lock:
            self.history.append(event)
            for sub in self._subscribers:
                sub(event)
        return event


class PlainRenderer:
    """One line per event, for pipes and logs; quiet events only with -v."""

    QUIET = {"probe", "facts", "connect"}

    def __init__(self, stream: TextIO | None = None, verbose: int = 0) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        if event.kind in self.QUIET and event.state not in {"failed"} and self.verbose < 1:
            return
        if event.kind == "consul" and event.state == "unchanged" and self.verbose < 1:
            return
        if event.state == "waiting" and self.verbose < 1 and event.kind != "gate":
            return
        elapsed = time.monotonic() - self.started
        where = f"{event.host:<10} " if event.host else ""
        phase = f"[phase {event.phase}] " if event.phase is not None else ""
        line = f"{elapsed:6.1f}s {phase}{where}{event.kind:<9} {event.state:<10} {event.message}".rstrip()
        self.stream.write(scrub(line) + "\n")
        self.stream.flush()


class JsonRenderer:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()


class LiveRenderer:
    """A live per-host table on a terminal: phase, step, host, state, elapsed."""

    def __init__(self, verbose: int = 0) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.rows: dict[str, tuple[str, str, str, float]] = {}
        self.started = time.monotonic()
        self.phase: int | None = None
        self.verbose = verbose
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)
        self.live.start()

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title=f"swarm — phase {self.phase}" if self.phase is not None else "swarm", expand=False)
        for col in ("host", "step", "state", "elapsed", "detail"):
            table.add_column(col)
        now = time.monotonic()
        for host, (step, state, detail, since) in sorted(self.rows.items()):
            colour = {"failed": "red", "ok": "green", "changed": "yellow", "unchanged": "green",
                      "rolled-back": "magenta"}.get(state, "cyan")
            table.add_row(host, step, f"[{colour}]{state}[/]", f"{now - since:5.1f}s", scrub(detail)[:80])
        return table

    def __call__(self, event: Event) -> None:
        if event.phase is not None:
            self.phase = event.phase
        if event.host:
            since = self.rows.get(event.host, ("", "", "", time.monotonic()))[3]
            self.rows[event.host] = (event.kind, event.state, event.message, since)
        elif event.kind == "run" and event.state in {"ok", "failed", "rolled-back"}:
            self.live.console.print(scrub(event.message))
        self.live.update(self._table())
        if event.kind == "run" and event.state in {"ok", "failed", "rolled-back", "unchanged"}:
            self.stop()

    def stop(self) -> None:
        self.live.stop()


class AuditLog:
    """Local audit trail: one JSON line per action (never a secret value)."""

    ACTIONS = {"lock", "upload", "apply", "gate", "switch", "rollback", "consul", "run", "prune"}

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: Event) -> None:
        if event.kind not in self.ACTIONS or event.state in {"start", "waiting", "info"}:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(event.to_json() + "\n")
