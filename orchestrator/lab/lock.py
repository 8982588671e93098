"""One lab per machine: an exclusive lock held by whoever uses the lab.

The lab's bridge, addresses and namespaces are global, so two users of it (a pytest
session, `swarm lab up`, a benchmark) would tear each other's fleet down. `hold()` takes
an exclusive `flock` on one fixed file, waiting (and saying so) while another process
holds it. The holder exports `SWARM_LAB_LOCK_OWNER`, so the `swarm` processes it starts
(a test running `swarm lab up`) do not wait on their own parent.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import RuntimeFailure

LOCK_FILE = Path(os.environ.get("SWARM_LAB_LOCK", "/run/lock/swarm-lab.lock"))
OWNER_ENV = "SWARM_LAB_LOCK_OWNER"


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextmanager
def hold(purpose: str, say: Callable[[str], None] = lambda _m: None,
         timeout: float | None = None) -> Iterator[None]:
    """Hold the lab for `purpose`; waits for the current holder (at most `timeout` s)."""
    if os.environ.get(OWNER_ENV):
        yield
        return
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, say, timeout)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {purpose}\n".encode())
        os.environ[OWNER_ENV] = str(os.getpid())
        try:
            yield
        finally:
            os.environ.pop(OWNER_ENV, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, say: Callable[[str], None], timeout: float | None) -> None:
    started = time.monotonic()
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not told:
                say(f"the lab is in use ({_holder(LOCK_FILE)}); waiting for it")
                told = True
            if timeout is not None and time.monotonic() - started > timeout:
                raise RuntimeFailure(f"the lab is still in use after {timeout:g}s: {_holder(LOCK_FILE)}") from None
            time.sleep(0.5)
