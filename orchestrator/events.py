"""Events, not prints: one typed stream that the console view, JSON output and audit log render.

Every event passes through `secrets.scrub` on its way out, so a secret value that slipped
into a message is masked in every renderer.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from orchestrator.secrets import scrub, scrub_data
from orchestrator.text import printable

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

    def close(self) -> None:
        """The run is over: renderers that hold a terminal let it go."""
        for sub in self._subscribers:
            stop = getattr(sub, "stop", None)
            if callable(stop):
                stop()

    def emit(self, kind: str, state: str, *, host: str | None = None, phase: int | None = None,
             message: str = "", **data: Any) -> Event:
        event = Event(kind=kind, state=state, host=host, phase=phase, message=scrub(message),
                      data=scrub_data(data))
        with self._lock:
            self.history.append(event)
            for sub in list(self._subscribers):
                try:
                    sub(event)
                except (OSError, ValueError) as exc:
                    # the reader went away (`| head`, a closed terminal, a full disk under the
                    # log): that view stops, the run does not — a deploy never stops half way
                    # because nobody is watching it
                    self._subscribers.remove(sub)
                    if isinstance(sub, AuditLog):  # not a view: say so, the nodes' audit goes on
                        _warn(f"swarm: the local audit log {sub.path} stopped ({exc}); each node's "
                              "audit.log still records this run")
        return event


class PlainRenderer:
    """One line per event, for pipes and logs; quiet events only with -v.

    A gate's per-round progress is printed for each waiting service at most every
    PROGRESS_EVERY seconds (every round with -v), so a 15-minute cold start visibly moves;
    a rolling rollout's drain at once and then every DRAIN_EVERY seconds.
    """

    QUIET = {"probe", "facts", "connect"}
    PROGRESS_EVERY = 30.0
    DRAIN_EVERY = 10.0   # a drain ("vllm-primary: draining, 3 in flight, 12 s of 120 s") moves faster

    def __init__(self, stream: TextIO | None = None, verbose: int = 0) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.started = time.monotonic()
        self._progress: dict[tuple[str | None, str], float] = {}

    def __call__(self, event: Event) -> None:
        if not self._shown(event):
            return
        elapsed = time.monotonic() - self.started
        where = f"{event.host:<10} " if event.host else ""
        phase = f"[phase {event.phase}] " if event.phase is not None else ""
        line = f"{elapsed:6.1f}s {phase}{where}{event.kind:<9} {event.state:<10} {event.message}"
        if event.state == "progress":
            line += _progress_tail(event)
        self.stream.write(printable(scrub(line.rstrip()), keep_newlines=True) + "\n")
        self.stream.flush()

    def _shown(self, event: Event) -> bool:
        if event.state == "progress":
            return self._progress_due(event)
        if self.verbose >= 1:
            return True
        if event.kind in self.QUIET and event.state != "failed":
            return event.state == "skipped"
        if event.kind == "consul" and event.state == "unchanged":
            return False
        return not (event.state == "waiting" and event.kind != "gate")

    def _progress_due(self, event: Event) -> bool:
        if self.verbose >= 1:
            return True
        key = (event.host, f"{event.kind}:{event.data.get('service', '')}")
        now = time.monotonic()
        last = self._progress.get(key)
        if last is None:
            self._progress[key] = now  # a gate's first round is its "waiting" line already
            return event.kind == "drain"
        if now - last < (self.DRAIN_EVERY if event.kind == "drain" else self.PROGRESS_EVERY):
            return False
        self._progress[key] = now
        return True


def _progress_tail(event: Event) -> str:
    left = event.data.get("deadline_left")
    return f" (deadline in {_duration(float(left))})" if isinstance(left, int | float) else ""


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class JsonRenderer:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()


class LiveRenderer:
    """A live table on a terminal: one row per host (its step), and while a gate waits one
    row per service under it — state, how long it has held of min_healthy_time, deadline left;
    a model server being drained by a rolling rollout shows its requests in flight and the
    drain's time ("vllm-primary  draining  3 in flight, 12 s of 120 s")."""

    def __init__(self, verbose: int = 0) -> None:
        # rich costs 25-85 ms to import here (python -X importtime, 2026-12-06): only a terminal's
        # live view needs it, never the plain, JSON or audit renderers
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.rows: dict[str, tuple[str, str, str, float]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.started = time.monotonic()
        self.phase: int | None = None
        self.verbose = verbose
        self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()
        self.stopped = False

    def _table(self) -> Any:
        from rich.table import Table  # with the console above: the live view's 25-85 ms

        table = Table(title=f"swarm — phase {self.phase}" if self.phase is not None else "swarm", expand=False)
        for col in ("host", "step", "state", "elapsed", "detail"):
            table.add_column(col)
        now = time.monotonic()
        hosts = sorted({*self.rows, *(h for h, _ in self.services)})
        for host in hosts:
            step, state, detail, since = self.rows.get(host, ("gate", "waiting", "", now))
            table.add_row(host, step, f"[{_colour(state)}]{state}[/]", f"{now - since:5.1f}s", _cell(detail))
            for (h, name), row in sorted(self.services.items()):
                if h == host:
                    table.add_row("", f"  {name}", f"[{_colour(row['state'])}]{row['state']}[/]",
                                  _held(row), _cell(row["detail"]))
        return table

    def __call__(self, event: Event) -> None:
        if self.stopped:
            return
        if event.phase is not None:
            self.phase = event.phase
        service = event.data.get("service")
        if event.kind in {"gate", "drain"} and event.host and isinstance(service, str):
            self._service(event, service)
        elif event.host:
            since = self.rows.get(event.host, ("", "", "", time.monotonic()))[3]
            self.rows[event.host] = (event.kind, event.state, event.message, since)
        elif event.kind in {"run", "rollback"} and event.state in {"ok", "failed", "rolled-back", "info", "start"}:
            self.live.console.print(_markup_safe(event.message))
        if event.kind == "gate" and event.state == "start" and event.host is None:
            self.services.clear()
        self.live.update(self._table())

    def _service(self, event: Event, name: str) -> None:
        row = self.services.setdefault((event.host or "", name), {"state": "waiting", "detail": ""})
        row["detail"] = event.message.split(": ", 1)[-1]
        if event.kind == "drain":  # "draining, 3 in flight, 12 s of 120 s" in the detail column
            row.update(state="drained" if event.state == "ok" else "draining", left=None)
        elif event.state == "ok":
            row["state"] = "healthy"
        elif event.state == "progress":
            row.update(state="holding" if event.data.get("held") else "waiting",
                       held=event.data.get("held"), hold=event.data.get("min_healthy"),
                       left=event.data.get("deadline_left"))

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.live.stop()


def _markup_safe(text: str) -> str:
    """Text for rich: secrets masked, control characters escaped, `[...]` not read as markup."""
    from rich.markup import escape  # the live view's rich (25-85 ms), loaded by then

    return str(escape(printable(scrub(text), keep_newlines=True)))


def _cell(text: str) -> str:
    return _markup_safe(printable(scrub(text))[:80])


def _colour(state: str) -> str:
    return {"failed": "red", "ok": "green", "changed": "yellow", "unchanged": "green", "healthy": "green",
            "rolled-back": "magenta"}.get(state, "cyan")


def _held(row: dict[str, Any]) -> str:
    held, hold, left = row.get("held"), row.get("hold"), row.get("left")
    if row["state"] == "healthy" or not isinstance(left, int | float):
        return ""
    hold_text = f"{float(held or 0):.0f}/{float(hold or 0):g}s" if isinstance(hold, int | float) else ""
    return f"{hold_text} ⏱{_duration(float(left))}"


def _warn(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
    except (OSError, ValueError):
        pass


class AuditLog:
    """Local audit trail: one JSON line per action (never a secret value)."""

    ACTIONS = {"lock", "upload", "apply", "gate", "switch", "rollback", "consul", "run", "prune"}

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __call__(self, event: Event) -> None:
        if event.kind not in self.ACTIONS or event.state in {"start", "waiting", "info", "progress"}:
            return
        # 0600 from the start (O_CREAT's mode), and an older 0644 log is narrowed: it says who
        # deployed what, where, and which commands failed with what output
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
            fh.write(event.to_json() + "\n")
