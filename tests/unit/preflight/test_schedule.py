"""Scheduled preflight: durations, systemd units (checked by systemd-analyze), install and
remove, and the foreground loop stopped by SIGTERM in a real subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.preflight.schedule import (
    DEFAULT_NAME,
    Schedule,
    Scope,
    Units,
    disable_commands,
    enable_commands,
    install,
    parse_duration,
    preflight_argv,
    remove,
    render_units,
    run_every,
    systemd_quote,
    systemd_timespan,
    unit_dir,
)

REPO = Path(__file__).resolve().parents[3]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (apt package systemd)"
)


# --- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("1h", 3600), ("1h30m", 5400), ("90s", 90), ("2d", 172800), (" 5M ", 300)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "15", "m", "0m", "-5m", "1.5h", "15 m", "1y", "999999d", "1h;"]
)
def test_bad_durations_are_input_errors(bad: str) -> None:
    with pytest.raises(InputError):
        parse_duration(bad)


@given(st.text(max_size=30))
def test_parse_duration_never_crashes(text: str) -> None:
    try:
        assert parse_duration(text) > 0
    except InputError:
        pass


@given(st.integers(min_value=1, max_value=366 * 86400))
def test_timespan_round_trips(seconds: int) -> None:
    span = systemd_timespan(seconds).replace("min", "m").replace(" ", "")
    assert parse_duration(span) == seconds


def test_systemd_timespan() -> None:
    assert systemd_timespan(900) == "15min"
    assert systemd_timespan(5400) == "1h 30min"
    assert systemd_timespan(90061) == "1d 1h 1min 1s"


# --- quoting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("/usr/local/bin/swarm", "/usr/local/bin/swarm"),
        ("--out", "--out"),
        ("my inventory.yml", '"my inventory.yml"'),
        ('it"s', '"it\\"s"'),
        ("100%", "100%%"),
        ("$HOME", '"$$HOME"'),
        ("a\\b", '"a\\\\b"'),
        (";", "\\;"),
        ("", '""'),
        ("日本", '"日本"'),
    ],
)
def test_systemd_quote(arg: str, quoted: str) -> None:
    assert systemd_quote(arg) == quoted


def test_executable_quoting() -> None:
    assert systemd_quote("/opt/$x/swarm", executable=True) == '"/opt/$x/swarm"'
    assert systemd_quote("/opt/100%/swarm", executable=True) == "/opt/100%%/swarm"
    with pytest.raises(InputError, match="quote or backslash"):
        systemd_quote("/opt/it's/swarm", executable=True)


def test_newlines_never_reach_a_unit_file() -> None:
    with pytest.raises(InputError, match="newline"):
        systemd_quote("a\nExecStartPre=/bin/rm -rf /")


# --- rendering -----------------------------------------------------------------------------


def argv(program: str = "/usr/local/bin/swarm") -> tuple[str, ...]:
    return preflight_argv(
        [program], Path("/var/lib/node_exporter/swarm_preflight.prom"), ["--phase", "2"]
    )


def test_service_runs_preflight_with_prometheus_output() -> None:
    units = render_units(argv(), Schedule(every="15m"), "system", user="swarm")
    assert (
        "ExecStart=/usr/local/bin/swarm preflight --output prometheus "
        "--out /var/lib/node_exporter/swarm_preflight.prom --phase 2\n" in units.service
    )
    assert "Type=oneshot" in units.service
    assert "SuccessExitStatus=1" in units.service
    assert "User=swarm" in units.service
    assert "After=network-online.target" in units.service


def test_interval_timer() -> None:
    units = render_units(argv(), Schedule(every="1h30m"), "user")
    assert units.timer.splitlines()[3:7] == [
        "[Timer]",
        "OnBootSec=2min",
        "OnUnitActiveSec=1h 30min",
        f"Unit={DEFAULT_NAME}.service",
    ]
    assert "WantedBy=timers.target" in units.timer
    assert "network-online" not in units.service  # not a user-manager target


def test_calendar_timer() -> None:
    units = render_units(argv(), Schedule(on_calendar="*-*-* 03:00:00"), "user")
    assert "OnCalendar=*-*-* 03:00:00\nPersistent=true\n" in units.timer


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"every": "15m", "on_calendar": "daily"}, "exactly one"),
        ({"every": "soon"}, "duration"),
        ({"on_calendar": "daily\nExecStart=/bin/sh"}, "calendar"),
    ],
)
def test_bad_schedules(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(InputError, match=match):
        Schedule(**kwargs)


def test_bad_unit_inputs() -> None:
    with pytest.raises(InputError, match="absolute"):
        render_units(preflight_argv(["swarm"], Path("x.prom")), Schedule(every="15m"), "user")
    with pytest.raises(InputError, match="unit name"):
        render_units(argv(), Schedule(every="15m"), "user", name="../evil")
    with pytest.raises(InputError, match="User="):
        render_units(argv(), Schedule(every="15m"), "user", user="swarm")
    with pytest.raises(InputError, match="scope"):
        render_units(argv(), Schedule(every="15m"), "global")  # type: ignore[arg-type]


# --- systemd-analyze verify -----------------------------------------------------------------


def fake_program(root: Path) -> Path:
    """An executable under a hostile directory name: spaces, %, $, ;, unicode (systemd
    itself refuses quotes and backslashes in an executable path)."""
    directory = root / "tools dir" / "100% $HOME; 日本"
    directory.mkdir(parents=True)
    program = directory / "swarm"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    return program


def verify(units: Units, scope: Scope, root: Path) -> tuple[int, list[str]]:
    paths = install(units, scope, target_dir=root / "units")
    runtime = root / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    cmd = [str(SYSTEMD_ANALYZE), *(["--user"] if scope == "user" else []), "verify"]
    done = subprocess.run(
        [*cmd, *map(str, paths)], capture_output=True, text=True, timeout=120, env=env
    )
    ours = [line for line in done.stderr.splitlines() if units.name in line or str(root) in line]
    return done.returncode, ours


@needs_systemd
@pytest.mark.parametrize("scope", ["system", "user"])
@pytest.mark.parametrize(
    "schedule",
    [Schedule(every="15m"), Schedule(on_calendar="*-*-* 03:00:00")],
    ids=["every", "calendar"],
)
def test_systemd_analyze_accepts_the_units(
    tmp_path: Path, scope: Scope, schedule: Schedule
) -> None:
    program = fake_program(tmp_path)
    out = tmp_path / "text files" / "swarm_preflight.prom"
    units = render_units(
        preflight_argv(
            [str(program)], out, ["--inventory", 'my inv/it\'s "100%" $HOME\\x.yml', ";"]
        ),
        schedule,
        scope,
        working_directory=tmp_path / "work dir",
        user="swarm" if scope == "system" else None,
    )
    code, complaints = verify(units, scope, tmp_path)
    assert code == 0 and complaints == [], complaints


@needs_systemd
def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The harness above would notice: a missing program is reported."""
    units = render_units(argv("/nonexistent/swarm"), Schedule(every="15m"), "system")
    code, complaints = verify(units, "system", tmp_path)
    assert code != 0 or complaints


# --- install / remove -----------------------------------------------------------------------


def test_install_and_remove(tmp_path: Path) -> None:
    units = render_units(argv(), Schedule(every="15m"), "user")
    written = install(units, "user", target_dir=tmp_path / "systemd" / "user")
    assert [p.name for p in written] == [f"{DEFAULT_NAME}.service", f"{DEFAULT_NAME}.timer"]
    assert written[0].read_text() == units.service
    assert remove(DEFAULT_NAME, "user", target_dir=tmp_path / "systemd" / "user") == written
    assert remove(DEFAULT_NAME, "user", target_dir=tmp_path / "systemd" / "user") == ()


def test_install_without_permission_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)  # as for a non-root user on /etc/systemd/system
    units = render_units(argv(), Schedule(every="15m"), "system")
    with pytest.raises(InputError, match="cannot write units to .*Permission denied") as err:
        install(units, "system", target_dir=tmp_path / "units")
    assert err.value.hint and "sudo" in err.value.hint


def test_install_into_a_file_path_is_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    units = render_units(argv(), Schedule(every="15m"), "user")
    with pytest.raises(InputError):
        install(units, "user", target_dir=blocker / "sub")


def test_unit_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert unit_dir("system") == Path("/etc/systemd/system")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert unit_dir("user", home=tmp_path) == tmp_path / ".config" / "systemd" / "user"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert unit_dir("user") == tmp_path / "cfg" / "systemd" / "user"


def test_systemctl_commands() -> None:
    assert enable_commands("swarm-preflight", "user") == (
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "--now", "swarm-preflight.timer"),
    )
    assert disable_commands("swarm-preflight", "system") == (
        ("systemctl", "disable", "--now", "swarm-preflight.timer", "swarm-preflight.service"),
    )


# --- the foreground loop ------------------------------------------------------------------------


def test_run_every_writes_each_result_and_stops(tmp_path: Path) -> None:
    out = tmp_path / "result.prom"
    stop = threading.Event()
    calls: list[int] = []

    def fn() -> str:
        calls.append(len(calls) + 1)
        if len(calls) == 3:
            stop.set()
        return f"run {len(calls)}\n"

    assert run_every(0.01, fn, stop, out=out) == 3
    assert out.read_text() == "run 3\n"


def test_run_every_errors_stop_the_loop_unless_handled(tmp_path: Path) -> None:
    stop = threading.Event()

    def boom() -> str:
        raise RuntimeError("checks crashed")

    with pytest.raises(RuntimeError, match="checks crashed"):
        run_every(0.01, boom, stop)

    seen: list[Exception] = []

    def handle(exc: Exception) -> None:
        seen.append(exc)
        if len(seen) == 2:
            stop.set()

    assert run_every(0.01, boom, stop, on_error=handle) == 2


def test_run_every_keeps_a_fixed_grid_without_bursts() -> None:
    now = [0.0]
    starts: list[float] = []
    stop = threading.Event()

    def fn() -> str:
        starts.append(now[0])
        now[0] += 25.0 if len(starts) == 2 else 1.0  # the second run overruns
        if len(starts) == 4:
            stop.set()
        return ""

    class FakeStop:
        def is_set(self) -> bool:
            return stop.is_set()

        def wait(self, seconds: float) -> bool:
            now[0] += max(seconds, 0.0)
            return stop.is_set()

    run_every(10.0, fn, FakeStop(), clock=lambda: now[0])  # type: ignore[arg-type]
    assert starts == [0.0, 10.0, 35.0, 45.0]  # late run starts at once, then the grid


LOOP_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from orchestrator.preflight.schedule import run_every, stop_on_signals

    out, marker, pause = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    count = 0

    def fn():
        global count
        count += 1
        time.sleep(pause)
        return f"run {count} complete\\n"

    stop = threading.Event()
    with stop_on_signals(stop):
        runs = run_every(0.05, fn, stop, out=out)
    marker.write_text(f"stopped after {runs} runs")
    """
)


def start_loop(tmp_path: Path, pause: float) -> tuple[subprocess.Popen[bytes], Path, Path]:
    script = tmp_path / "loop.py"
    script.write_text(LOOP_SCRIPT)
    out, marker = tmp_path / "result.prom", tmp_path / "stopped"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, str(script), str(out), str(marker), str(pause)], env=env
    )
    return process, out, marker


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def test_sigterm_ends_the_loop_cleanly(tmp_path: Path) -> None:
    process, out, marker = start_loop(tmp_path, pause=0.0)
    try:
        wait_for(lambda: _later_run(out, 3))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert marker.read_text().startswith("stopped after")
    assert out.read_text().endswith("complete\n")


def test_sigterm_during_a_run_lets_it_finish_and_write(tmp_path: Path) -> None:
    process, out, marker = start_loop(tmp_path, pause=1.0)
    try:
        wait_for(lambda: out.exists())  # first run written, second run now in progress
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert marker.read_text() == "stopped after 2 runs"
    assert out.read_text() == "run 2 complete\n"


def _later_run(out: Path, n: int) -> bool:
    if not out.exists():
        return False
    words = out.read_text().split()
    return len(words) >= 2 and words[1].isdigit() and int(words[1]) >= n
