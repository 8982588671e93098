"""Scheduled preflight (and backups): systemd service + timer units, and an in-process loop.

`swarm schedule install` renders a oneshot service that runs `swarm preflight --output
prometheus --out FILE ...` and a timer that starts it every interval (`15m` ->
`OnUnitActiveSec=15min`) or on a calendar expression (`OnCalendar=`), for the user's
systemd (`~/.config/systemd/user`) or the system's (`/etc/systemd/system`). Rendering is
pure; `install` / `remove` only write or delete the two files, and the `systemctl`
commands to (de)activate them are returned as argv tuples for the caller to run.
`swarm schedule install --backup` renders the same pair for `swarm backup --metrics FILE`
(`swarm-backup`, daily by default: docs/backup.md).

`swarm preflight --every 15m` instead stays in the foreground: `run_every` runs the
checks, writes each result atomically, and returns cleanly once SIGTERM/SIGINT arrives
(the run in progress finishes and is written first).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

from orchestrator.errors import InputError
from orchestrator.preflight.report import write_atomic

Scope = Literal["user", "system"]
SCOPES: tuple[Scope, ...] = ("user", "system")
DEFAULT_NAME = "swarm-preflight"
BACKUP_NAME = "swarm-backup"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
MAX_INTERVAL_S = 366 * 86400

# --- durations ------------------------------------------------------------------------

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(?:[0-9]{1,9}[smhd])+", re.ASCII)
_DURATION_PART_RE = re.compile(r"([0-9]+)([smhd])", re.ASCII)


def parse_duration(text: str) -> int:
    """`15m`, `1h30m`, `90s`, `2d` -> seconds; InputError for anything else."""
    compact = text.strip().lower()
    if not _DURATION_RE.fullmatch(compact):
        raise InputError(
            f"duration {text!r}: expected numbers with units s, m, h, d",
            hint='e.g. "15m", "1h30m", "90s"',
        )
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART_RE.findall(compact))
    if seconds <= 0:
        raise InputError(f"duration {text!r}: must be longer than zero")
    if seconds > MAX_INTERVAL_S:
        raise InputError(f"duration {text!r}: longer than a year", hint="use a calendar schedule")
    return seconds


def systemd_timespan(seconds: int) -> str:
    """5400 -> `1h 30min`, as systemd.time(7) writes spans."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0"


# --- quoting for unit files --------------------------------------------------------------

_BARE_ARG_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_CALENDAR_RE = re.compile(r"[A-Za-z0-9 *:/.,~+-]+")


def _reject_control(text: str, what: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InputError(f"{what} {text!r} contains a newline or control character")


def systemd_quote(arg: str, *, executable: bool = False) -> str:
    """One ExecStart= argument: `%` doubled (no specifier expansion), `$` doubled in
    arguments (no variable expansion; systemd does not expand the executable), quoted
    with C escapes when it has anything but plain characters, a lone `;` escaped."""
    _reject_control(arg, "argument")
    if executable and any(c in arg for c in "'\"\\"):
        raise InputError(
            f"program path {arg!r} contains a quote or backslash, which systemd refuses",
            hint="install swarm under a path without quotes or backslashes",
        )
    if arg == ";":
        return "\\;"
    escaped = arg.replace("%", "%%") if executable else arg.replace("%", "%%").replace("$", "$$")
    if _BARE_ARG_RE.fullmatch(escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec_line(argv: Sequence[str]) -> str:
    program, *args = argv
    return " ".join([systemd_quote(program, executable=True), *map(systemd_quote, args)])


def _unit_text(text: str, what: str) -> str:
    """A free-text value (Description=, WorkingDirectory=): one line, `%` doubled."""
    _reject_control(text, what)
    return text.replace("%", "%%")


# --- units -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When the timer fires: every `every` (`15m`) or on `on_calendar` (`daily`)."""

    every: str | None = None
    on_calendar: str | None = None

    def __post_init__(self) -> None:
        if (self.every is None) == (self.on_calendar is None):
            raise InputError("give exactly one of --every and --on-calendar")
        if self.every is not None:
            parse_duration(self.every)
        if self.on_calendar is not None and not _CALENDAR_RE.fullmatch(self.on_calendar):
            raise InputError(
                f"--on-calendar {self.on_calendar!r} is not a calendar expression",
                hint='see systemd.time(7), e.g. "hourly" or "*-*-* 03:00:00"',
            )

    def timer_lines(self) -> list[str]:
        if self.every is not None:
            span = systemd_timespan(parse_duration(self.every))
            # OnBootSec= also fires right away when the timer starts after boot.
            return ["OnBootSec=2min", f"OnUnitActiveSec={span}"]
        return [f"OnCalendar={self.on_calendar}", "Persistent=true"]

    def describe(self) -> str:
        if self.every is not None:
            return f"every {systemd_timespan(parse_duration(self.every))}"
        return f"on calendar {self.on_calendar}"


@dataclass(frozen=True)
class Units:
    """A rendered service + timer pair, by file name."""

    name: str
    service: str
    timer: str

    @property
    def files(self) -> dict[str, str]:
        return {f"{self.name}.service": self.service, f"{self.name}.timer": self.timer}


def preflight_argv(program: Sequence[str], out: Path, args: Sequence[str] = ()) -> tuple[str, ...]:
    """`<program> preflight --output prometheus --out <out> <args...>`."""
    return (*program, "preflight", "--output", "prometheus", "--out", str(out), *args)


def backup_argv(program: Sequence[str], out: Path, args: Sequence[str] = ()) -> tuple[str, ...]:
    """`<program> backup --metrics <out> <args...>`: the backup gauges for the textfile collector."""
    return (*program, "backup", "--metrics", str(out), *args)


def render_units(
    argv: Sequence[str],
    schedule: Schedule,
    scope: Scope,
    *,
    name: str = DEFAULT_NAME,
    working_directory: Path | None = None,
    user: str | None = None,
    timeout: str = "30m",
    description: str = "swarm preflight checks",
    success_codes: Sequence[int] = (1,),
) -> Units:
    """The service and timer that run `argv` on `schedule`; `argv[0]` must be absolute."""
    _check_name(name)
    _check_scope(scope)
    if not argv or not Path(argv[0]).is_absolute():
        raise InputError(
            f"program {argv[0] if argv else ''!r} must be an absolute path",
            hint="systemd runs the unit without your PATH; give the full path to swarm",
        )
    service = _render_service(argv, scope, working_directory, user, timeout, description, success_codes)
    return Units(name, service, _render_timer(name, schedule, description))


def _render_service(
    argv: Sequence[str],
    scope: Scope,
    working_directory: Path | None,
    user: str | None,
    timeout: str,
    description: str = "swarm preflight checks",
    success_codes: Sequence[int] = (1,),
) -> str:
    unit = ["[Unit]", f"Description={_unit_text(description, 'description')}"]
    if scope == "system":
        unit += ["Wants=network-online.target", "After=network-online.target"]
    service = [
        "[Service]",
        "Type=oneshot",
        "ExecStart=" + _exec_line(argv),
        f"TimeoutStartSec={systemd_timespan(parse_duration(timeout))}",
    ]
    if success_codes:
        # preflight: exit 1 means "a check failed": a result, published in the metrics, not a
        # unit failure. Exit 2 (bad input) and crashes still fail the unit.
        service.insert(3, "SuccessExitStatus=" + " ".join(str(c) for c in success_codes))
    if working_directory is not None:
        if not working_directory.is_absolute():
            raise InputError(f"working directory {working_directory} must be absolute")
        service.append(
            f"WorkingDirectory={_unit_text(str(working_directory), 'working directory')}"
        )
    if user is not None:
        if scope != "system":
            raise InputError("User= only applies to a system-scope schedule")
        service.append(f"User={_check_user(user)}")
    return "\n".join([*unit, "", *service]) + "\n"


def _render_timer(name: str, schedule: Schedule, description: str = "swarm preflight checks") -> str:
    lines = [
        "[Unit]",
        f"Description=Run {_unit_text(description, 'description')} {_unit_text(schedule.describe(), 'schedule')}",
        "",
        "[Timer]",
        *schedule.timer_lines(),
        f"Unit={name}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    return "\n".join(lines) + "\n"


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,200}")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name) or name.endswith((".service", ".timer")):
        raise InputError(
            f"unit name {name!r}: letters, digits, '_', '.', '@', '-' only, without a suffix",
            hint=f'e.g. "{DEFAULT_NAME}"',
        )


def _check_user(user: str) -> str:
    if not _USER_RE.fullmatch(user):
        raise InputError(f"user {user!r} is not a valid user name")
    return user


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise InputError(f"scope {scope!r}: expected one of {', '.join(SCOPES)}")


# --- files and systemctl -------------------------------------------------------------------


def unit_dir(scope: Scope, home: Path | None = None) -> Path:
    """Where systemd reads units of `scope` (XDG_CONFIG_HOME respected for the user)."""
    _check_scope(scope)
    if scope == "system":
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config) if config and home is None else (home or Path.home()) / ".config"
    return base / "systemd" / "user"


def install(units: Units, scope: Scope, target_dir: Path | None = None) -> tuple[Path, ...]:
    """Write the service and timer files (atomically) and return their paths."""
    directory = target_dir or unit_dir(scope)
    hint = "system units need root (sudo), or install with the user scope"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for filename, text in units.files.items():
            write_atomic(directory / filename, text)
    except OSError as exc:
        if not isinstance(exc, PermissionError):
            hint = "a file blocks the unit directory path; remove it or pick another directory"
        raise InputError(f"cannot write units to {directory}: {exc.strerror}", hint=hint) from exc
    except InputError as exc:
        raise InputError(exc.message, hint=hint) from exc
    return tuple(directory / filename for filename in units.files)


def remove(name: str, scope: Scope, target_dir: Path | None = None) -> tuple[Path, ...]:
    """Delete the service and timer files if present; return the ones removed."""
    _check_name(name)
    directory = target_dir or unit_dir(scope)
    removed = []
    for suffix in (".service", ".timer"):
        path = directory / f"{name}{suffix}"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return tuple(removed)


def _systemctl(scope: Scope) -> tuple[str, ...]:
    return ("systemctl", "--user") if scope == "user" else ("systemctl",)


def enable_commands(name: str, scope: Scope) -> tuple[tuple[str, ...], ...]:
    """Run after `install`: reload units, then enable and start the timer."""
    return (
        (*_systemctl(scope), "daemon-reload"),
        (*_systemctl(scope), "enable", "--now", f"{name}.timer"),
    )


def disable_commands(name: str, scope: Scope) -> tuple[tuple[str, ...], ...]:
    """Run before `remove`: stop and disable the timer and any run in progress."""
    return ((*_systemctl(scope), "disable", "--now", f"{name}.timer", f"{name}.service"),)


# --- foreground loop -----------------------------------------------------------------------


def run_every(
    interval_s: float,
    fn: Callable[[], str],
    stop: threading.Event,
    *,
    out: Path | None = None,
    on_error: Callable[[Exception], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run `fn` now and every `interval_s` until `stop` is set; return how many runs.

    Each run's text is written atomically to `out`. Runs start on a fixed grid (no
    drift); a run longer than the interval delays the next one rather than queueing
    several. An exception ends the loop unless `on_error` takes it. Setting `stop`
    during a run lets that run finish and be written before returning.
    """
    if interval_s <= 0:
        raise InputError("interval must be longer than zero")
    runs = 0
    next_start = clock()
    while not stop.is_set():
        _run_once(fn, out, on_error)
        runs += 1
        next_start = max(next_start + interval_s, clock())
        stop.wait(next_start - clock())
    return runs


def _run_once(
    fn: Callable[[], str], out: Path | None, on_error: Callable[[Exception], None] | None
) -> None:
    try:
        text = fn()
    except Exception as exc:
        if on_error is None:
            raise
        on_error(exc)
        return
    if out is not None:
        write_atomic(out, text)


@contextlib.contextmanager
def stop_on_signals(
    stop: threading.Event, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> Iterator[threading.Event]:
    """Set `stop` when one of `signals` arrives (main thread only); restore on exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # Event.set takes a lock the interrupted main thread may hold: set it from a
        # helper thread instead of inside the handler.
        threading.Thread(target=stop.set, daemon=True).start()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
