"""The deploy lock: an atomic `mkdir` whose holder file says who, when and what."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

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
    return sh(script, lock_dir, mutates=True, label="lock-acquire")


def lock_release(lock_dir: str) -> Command:
    """Remove the lock dir (also how a stale lock is broken, explicitly)."""
    if not posixpath.basename(lock_dir.rstrip("/")).endswith("lock"):
        raise ValueError(f"refusing to remove {lock_dir!r}: not a lock directory")
    return mutating("rm", "-rf", "--", lock_dir)


def lock_holder(lock_dir: str) -> Command:
    return read_file(posixpath.join(lock_dir, _HOLDER_FILE))



LOOK_UNCHANGED = "unchanged"
LOOK_LOCKED = "locked"
SKIPPED_EXIT = 99  # a step guarded by `only_if_locked` that did not run
APPLIED_FILE = "applied.txt"  # in each release: one `service hash` line per applied service

_LOOK = (
    'root=$1 holder=$2 run=$3 need=$4; shift 4; '
    f'applied="$root/current/{APPLIED_FILE}"; '
    # applied.txt read once with shell builtins (no grep per service: a fork each), then each
    # expected line matched whole; `|` never occurs in a `service hash` line
    'have="|"; if [ "$need" != 1 ] && [ -r "$applied" ]; then '
    'while IFS= read -r l || [ -n "$l" ]; do have="$have$l|"; done < "$applied"; fi; '
    'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do '
    'case "$1" in *"|"*) need=1;; esac; case "$have" in *"|$1|"*) ;; *) need=1;; esac; shift; done; '
    '[ "$#" -gt 0 ] && shift; '
    'for d; do [ -d "$root/$d" ] || need=1; done; '
    f'if [ "$need" != 1 ]; then echo {LOOK_UNCHANGED}; '
    f'cat -- "$root/.lock/{_HOLDER_FILE}" 2>/dev/null; exit 0; fi; '
    'mkdir -p -- "$root" || exit 1; '
    'if mkdir -- "$root/.lock" 2>/dev/null; then '
    f'if printf "%s\\n" "$holder" > "$root/.lock/{_HOLDER_FILE}" && : > "$root/.lock/run-$run"; '
    f'then echo {LOOK_LOCKED}; else rm -rf -- "$root/.lock"; exit 1; fi; '  # a full disk: no half lock
    f'elif [ -e "$root/.lock/run-$run" ]; then echo {LOOK_LOCKED}; '
    f'else cat -- "$root/.lock/{_HOLDER_FILE}" 2>/dev/null; exit {LOCK_HELD_EXIT}; fi'
)


def look_lock(deploy_root: str, holder: str, run_id: str, expected: Sequence[str],
              directories: Sequence[str] = (), *, force: bool = False) -> Command:
    """Lock, then look: take the deploy lock unless the node already runs what is wanted.

    `expected` are `service hash` lines; when every one is in the current release's
    applied.txt and every directory exists (and not `force`), the node prints
    `unchanged` (and the holder of a lock someone else holds, if any) and takes no lock:
    a no-op run stays one command. Otherwise it takes the lock (`locked`, with a
    `run-<run_id>` marker that `only_if_locked` steps test) or exits LOCK_HELD_EXIT
    printing the other holder's record. A lock that already carries this run's marker is
    this run's (finishing a cut-off unwind reuses the run id): `locked`.
    """
    if not run_id.isalnum():
        raise ValueError(f"run id must be alphanumeric, got {run_id!r}")
    args = [deploy_root, holder, run_id, "1" if force else "0", *expected, "--", *directories]
    return sh(_LOOK, *args, mutates=True, label="look-lock")


def run_marker(deploy_root: str, run_id: str) -> str:
    return posixpath.join(deploy_root, ".lock", f"run-{run_id}")


def only_if_locked(marker: str, command: Command) -> Command:
    """Run `command` only when this run holds the lock (its marker exists); else exit SKIPPED_EXIT."""
    return sh(f'[ -e "$1" ] || exit {SKIPPED_EXIT}; shift; exec "$@"', marker, *command.argv,
              mutates=command.mutates, label=f"if-locked {command.describe()}")


def unlock_if_mine(deploy_root: str, run_id: str) -> Command:
    """Release the lock only if this run holds it (never someone else's)."""
    script = '[ -e "$1/.lock/run-$2" ] || exit 0; rm -rf -- "$1/.lock"'
    return sh(script, deploy_root, run_id, mutates=True, label="unlock-if-mine")
