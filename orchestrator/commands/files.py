"""Files on a node: atomic writes, symlink switches, reads that say "missing", checksums."""

from __future__ import annotations

import re
from collections.abc import Iterable

from orchestrator.commands.base import Command, mutating, read_only, sh

PRESENT = "swarm:present"
MISSING = "swarm:missing"


def mkdir_p(*paths: str) -> Command:
    return mutating("mkdir", "-p", "--", *paths)


def install_dir(tmp: str, final: str) -> Command:
    """Atomic directory install: rename a fully written temp dir into place."""
    return mutating("mv", "-T", "--", tmp, final)


def switch_symlink(target: str, link: str) -> Command:
    """Point `link` at `target` atomically (new symlink, then rename over the old)."""
    return sh(
        'ln -sfn -- "$1" "$2.swarm-new" && mv -T -- "$2.swarm-new" "$2"', target, link, mutates=True,
        label="switch-symlink",
    )


def read_link(link: str) -> Command:
    """Print a symlink's target, or nothing (exit 0) when it does not exist."""
    return sh('readlink -- "$1" || true', link, mutates=False, label="read-link")


def read_file(path: str) -> Command:
    """Print `swarm:present` + the file, or `swarm:missing`; see `parse_read_file`."""
    script = f'if [ -f "$1" ]; then echo {PRESENT} && cat -- "$1"; else echo {MISSING}; fi'
    return sh(script, path, mutates=False, label="read-file")


def parse_read_file(stdout: str) -> str | None:
    """Content of the file `read_file` printed, None when it was missing."""
    header, _, body = stdout.partition("\n")
    if header == MISSING:
        return None
    if header != PRESENT:
        raise ValueError(f"unexpected read_file output: {header[:60]!r}")
    return body


def write_file(path: str, mode: int) -> Command:
    """Write stdin to `path` atomically: created 0600, chmod `mode`, then renamed.

    The body travels as bytes on stdin, never in the command; the mode is set before
    the rename so a secret file is never briefly readable by others.
    """
    script = (
        'umask 077 && mkdir -p -- "$(dirname -- "$1")" && t="$1.swarm-tmp.$$" && '
        'cat > "$t" && chmod "$2" "$t" && mv -f -- "$t" "$1" || { rm -f -- "$t"; exit 1; }'
    )
    return sh(script, path, format(mode, "04o"), mutates=True, label="write-file")


def append_file(path: str) -> Command:
    """Append stdin to `path` (e.g. one audit JSON line), creating it 0600 if missing."""
    return sh('umask 077 && mkdir -p -- "$(dirname -- "$1")" && cat >> "$1"', path, mutates=True, label="append-file")


def cat_file(path: str) -> Command:
    return read_only("cat", "--", path)


def sha256_files(paths: Iterable[str]) -> Command:
    """sha256 of each existing file; missing files are skipped (see parse_sha256sum)."""
    script = 'for f; do if [ -f "$f" ]; then sha256sum -- "$f"; fi; done; true'
    return sh(script, *paths, mutates=False, label="sha256-files")


def sha256_tree(directory: str) -> Command:
    """sha256 of every regular file under `directory` (nothing if it is missing)."""
    script = 'if [ -d "$1" ]; then find "$1" -type f -exec sha256sum -- {} +; fi'
    return sh(script, directory, mutates=False, label="sha256-tree")


def parse_sha256sum(stdout: str) -> dict[str, str]:
    """`sha256sum` lines -> {path: hexdigest}; handles GNU's escaped names."""
    hashes: dict[str, str] = {}
    for line in stdout.splitlines():
        escaped = line.startswith("\\")
        digest, _, name = line.removeprefix("\\").partition("  ")
        if escaped:
            name = _unescape_sha256_name(name)
        if digest and name:
            hashes[name] = digest
    return hashes


def _unescape_sha256_name(name: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), name)





