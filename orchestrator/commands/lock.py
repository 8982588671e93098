"""The deploy lock: an atomic `mkdir` whose holder file says who, when and what."""

from __future__ import annotations

import posixpath

from orchestrator.commands.base import Command, mutating, sh
from orchestrator.commands.files import read_file

LOCK_HELD_EXIT = 75  # EX_TEMPFAIL: lock_acquire's exit status when another deploy holds it
_HOLDER_FILE = "holder.json"


def lock_acquire(lock_dir: str) -> Command:
    """`mkdir` as an atomic lock; stdin (who/when/what JSON) becomes the holder file.

    Exit 0: acquired. Exit LOCK_HELD_EXIT: held by someone else, whose holder file is
    printed on stdout.
    """
    script = (
        'mkdir -p -- "$(dirname -- "$1")" || exit 1; '
        f'if mkdir -- "$1" 2>/dev/null; then cat > "$1/{_HOLDER_FILE}"; '
        f'else cat -- "$1/{_HOLDER_FILE}" 2>/dev/null; exit {LOCK_HELD_EXIT}; fi'
    )
    return sh(script, lock_dir, mutates=True)


def lock_release(lock_dir: str) -> Command:
    """Remove the lock dir (also how a stale lock is broken, explicitly)."""
    if not posixpath.basename(lock_dir.rstrip("/")).endswith("lock"):
        raise ValueError(f"refusing to remove {lock_dir!r}: not a lock directory")
    return mutating("rm", "-rf", "--", lock_dir)


def lock_holder(lock_dir: str) -> Command:
    return read_file(posixpath.join(lock_dir, _HOLDER_FILE))

