"""Processes of the lab: run commands, spawn daemons, wait against deadlines, stop them.

Commands are argv lists run without a shell. Daemons get a clean environment (no proxy
variables: lab traffic must never leave 198.18.0.0/15) and their own session, so they
outlive the `swarm lab up` process; their pids go to pidfiles under the lab directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator.errors import CommandFailed, RuntimeFailure

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def clean_env(**extra: str) -> dict[str, str]:
    """Environment for lab daemons: PATH, HOME, LANG — and nothing that names a proxy."""
    env = {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120.0,
        input_text: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv, capture output; raise CommandFailed on a non-zero exit when `check`.

    The environment is `clean_env()` unless `env` is given (package installs pass the
    caller's, so apt and pip may use the machine's proxy settings).
    """
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                input=input_text, env=env or clean_env(), check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeFailure(f"lab: timed out after {timeout:g}s: {' '.join(argv)}") from exc
    if check and result.returncode != 0:
        raise CommandFailed("localhost", " ".join(argv), result.returncode,
                            result.stdout, result.stderr)
    return result


def spawn(argv: Sequence[str], log_path: Path, pidfile: Path | None = None) -> int:
    """Start a daemon in its own session with output to log_path; returns its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=clean_env(),
                                 start_new_session=True)
    if pidfile is not None:
        pidfile.write_text(f"{child.pid}\n")
    return child.pid


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               hint: str | None = None) -> None:
    """Poll predicate with growing sleeps until it holds; RuntimeFailure at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not predicate():
        if time.monotonic() >= deadline:
            raise RuntimeFailure(f"lab: {what} not ready after {timeout:g}s", hint=hint)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def terminate(pids: Sequence[int], timeout: float = 5.0) -> None:
    """SIGTERM the pids, wait (bounded), then SIGKILL whatever is left."""
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_alive(p) for p in pids):
        time.sleep(0.05)
    _signal_all([p for p in pids if is_alive(p)], signal.SIGKILL)


def _signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_pidfile(pidfile: Path, expected_comm: str, timeout: float = 5.0) -> None:
    """Stop the process a pidfile names, if it is still the program we started."""
    pid = read_pid(pidfile)
    if pid is not None and is_alive(pid) and comm(pid).startswith(expected_comm[:15]):
        terminate([pid], timeout)
    pidfile.unlink(missing_ok=True)
