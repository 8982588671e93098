"""Remote commands as data: argv tuples, built by pure functions, quoted in one place.

A `Command` is an argv tuple plus a `mutates` flag: read-only commands (inspect, ps,
cat, df) may run under `--check`, mutating ones are only recorded there. `to_shell` is
the single place where argv becomes a shell string (`shlex.join`); nothing else in
swarm formats shell text. When a builder needs shell logic (if/||, redirections) it
uses a fixed script text with the data passed as positional parameters:
`("sh", "-c", "<fixed text using \"$1\">", "sh", data...)` -- the data never becomes code.

A `Script` batches several commands into one remote `sh -c` so a batch costs one round
trip. Each command is framed by random markers on stdout and stderr, so the result of a
batch splits back into per-command exit status and output, and a failure names the
command that failed.
"""

from __future__ import annotations

import json
import posixpath
import re
import secrets
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Argv = tuple[str, ...]

PRESENT = "swarm:present"
MISSING = "swarm:missing"
LOCK_HELD_EXIT = 75  # EX_TEMPFAIL: lock_acquire's exit status when another deploy holds it
_HOLDER_FILE = "holder.json"


def to_shell(argv: Sequence[str]) -> str:
    """Quote an argv for a POSIX shell: the ONE place swarm builds shell strings."""
    if not argv:
        raise ValueError("empty command")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"command arguments must be str, got {type(arg).__name__}")
        if "\0" in arg:
            raise ValueError("a command argument cannot contain a NUL byte")
    return shlex.join(argv)


@dataclass(frozen=True)
class Command:
    """One remote command; `mutates=False` marks it safe to run under `--check`."""

    argv: Argv
    mutates: bool = True

    def __post_init__(self) -> None:
        to_shell(self.argv)  # validates: non-empty, str only, no NUL

    @property
    def shell(self) -> str:
        return to_shell(self.argv)

    def __str__(self) -> str:
        return self.shell


def read_only(*argv: str) -> Command:
    return Command(tuple(argv), mutates=False)


def mutating(*argv: str) -> Command:
    return Command(tuple(argv), mutates=True)


def _sh(script: str, *args: str, mutates: bool) -> Command:
    """A fixed shell snippet with data only as positional parameters ($1, $2, ...)."""
    return Command(("sh", "-c", script, "sh", *args), mutates=mutates)


# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class StepResult:
    """What one command of a `Script` did: exit status is None if it never finished."""

    command: Command
    exit_status: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class Script:
    """Several commands in one remote `sh -c`; stop at the first failure or run all."""

    commands: tuple[Command, ...]
    stop_on_error: bool = True
    nonce: str = field(default_factory=lambda: secrets.token_hex(8), compare=False)

    def __post_init__(self) -> None:
        if not self.commands:
            raise ValueError("empty script")

    @classmethod
    def of(cls, *commands: Command, stop_on_error: bool = True) -> Script:
        return cls(tuple(commands), stop_on_error=stop_on_error)

    @property
    def mutates(self) -> bool:
        return any(c.mutates for c in self.commands)

    def text(self) -> str:
        """The `sh` program: every command framed by begin/end markers."""
        body = "\n".join(self._framed(i, c) for i, c in enumerate(self.commands))
        return body + '\nexit "${__swarm_fail:-0}"\n'

    def to_command(self) -> Command:
        return Command(("sh", "-c", self.text()), mutates=self.mutates)

    @property
    def shell(self) -> str:
        return self.to_command().shell

    def split(self, stdout: str, stderr: str) -> tuple[StepResult, ...]:
        """Cut a batch's output back into one `StepResult` per command."""
        outs = dict(self._sections(stdout, with_status=True))
        errs = dict(self._sections(stderr, with_status=False))
        return tuple(self._step(i, c, outs, errs) for i, c in enumerate(self.commands))

    def _framed(self, index: int, command: Command) -> str:
        begin = f"{self.nonce}:{index}:b"
        parts = [
            to_shell(("printf", "%s\\n", begin)),
            to_shell(("printf", "%s\\n", begin)) + " >&2",
            command.shell,
            "__swarm_rc=$?",
            to_shell(("printf", "\\n%s:%d:e:%d\\n", self.nonce, str(index))) + ' "$__swarm_rc"',
            to_shell(("printf", "\\n%s:%d:e\\n", self.nonce, str(index))) + " >&2",
        ]
        on_error = (
            'exit "$__swarm_rc"'
            if self.stop_on_error
            else "__swarm_fail=${__swarm_fail:-$__swarm_rc}"
        )
        parts.append(f'[ "$__swarm_rc" -eq 0 ] || {on_error}')
        return "; ".join(parts)

    def _sections(
        self, text: str, *, with_status: bool
    ) -> list[tuple[int, tuple[str, int | None]]]:
        nonce = re.escape(self.nonce)
        end = r":(\d+)" if with_status else "()"
        pattern = re.compile(rf"{nonce}:(\d+):b\n(.*?)(?:\n{nonce}:\1:e{end}\n|\Z)", re.S)
        found = []
        for m in pattern.finditer(text):
            status = int(m.group(3)) if with_status and m.group(3) else None
            found.append((int(m.group(1)), (m.group(2), status)))
        return found

    @staticmethod
    def _step(
        index: int,
        command: Command,
        outs: dict[int, tuple[str, int | None]],
        errs: dict[int, tuple[str, int | None]],
    ) -> StepResult:
        stdout, status = outs.get(index, ("", None))
        return StepResult(command, status, stdout, errs.get(index, ("", None))[0])


Runnable = Command | Script | Argv


def as_command(item: Runnable) -> Command:
    """Normalise what a transport accepts; a bare argv tuple counts as mutating."""
    if isinstance(item, Command):
        return item
    if isinstance(item, Script):
        return item.to_command()
    return Command(tuple(item), mutates=True)


def mutates(item: Runnable) -> bool:
    return item.mutates if isinstance(item, Command | Script) else True


# --------------------------------------------------------------------------- files


def mkdir_p(*paths: str) -> Command:
    return mutating("mkdir", "-p", "--", *paths)


def install_dir(tmp: str, final: str) -> Command:
    """Atomic directory install: rename a fully written temp dir into place."""
    return mutating("mv", "-T", "--", tmp, final)


def switch_symlink(target: str, link: str) -> Command:
    """Point `link` at `target` atomically (new symlink, then rename over the old)."""
    return _sh(
        'ln -sfn -- "$1" "$2.swarm-new" && mv -T -- "$2.swarm-new" "$2"', target, link, mutates=True
    )


def read_link(link: str) -> Command:
    """Print a symlink's target, or nothing (exit 0) when it does not exist."""
    return _sh('readlink -- "$1" || true', link, mutates=False)


def read_file(path: str) -> Command:
    """Print `swarm:present` + the file, or `swarm:missing`; see `parse_read_file`."""
    script = f'if [ -f "$1" ]; then echo {PRESENT} && cat -- "$1"; else echo {MISSING}; fi'
    return _sh(script, path, mutates=False)


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
    return _sh(script, path, format(mode, "04o"), mutates=True)


def append_file(path: str) -> Command:
    """Append stdin to `path` (e.g. one audit JSON line), creating it 0600 if missing."""
    return _sh('umask 077 && mkdir -p -- "$(dirname -- "$1")" && cat >> "$1"', path, mutates=True)


def cat_file(path: str) -> Command:
    return read_only("cat", "--", path)


def sha256_files(paths: Iterable[str]) -> Command:
    """sha256 of each existing file; missing files are skipped (see parse_sha256sum)."""
    script = 'for f; do if [ -f "$f" ]; then sha256sum -- "$f"; fi; done; true'
    return _sh(script, *paths, mutates=False)


def sha256_tree(directory: str) -> Command:
    """sha256 of every regular file under `directory` (nothing if it is missing)."""
    script = 'if [ -d "$1" ]; then find "$1" -type f -exec sha256sum -- {} +; fi'
    return _sh(script, directory, mutates=False)


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


def remove_releases(deploy_root: str, release_ids: Iterable[str]) -> Command:
    """rm -rf old releases; refuses any path that is not directly under releases/."""
    releases = posixpath.join(posixpath.normpath(deploy_root), "releases")
    paths = [_release_path(releases, rid) for rid in release_ids]
    if not paths:
        raise ValueError("no releases to remove")
    return mutating("rm", "-rf", "--", *paths)


def _release_path(releases: str, release_id: str) -> str:
    bad = not release_id or "/" in release_id or release_id in {".", ".."}
    if bad or not posixpath.isabs(releases) or releases == "/releases":
        raise ValueError(f"refusing to remove {release_id!r}: not a release under {releases}/")
    return posixpath.join(releases, release_id)


# --------------------------------------------------------------------------- lock


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
    return _sh(script, lock_dir, mutates=True)


def lock_release(lock_dir: str) -> Command:
    """Remove the lock dir (also how a stale lock is broken, explicitly)."""
    if not posixpath.basename(lock_dir.rstrip("/")).endswith("lock"):
        raise ValueError(f"refusing to remove {lock_dir!r}: not a lock directory")
    return mutating("rm", "-rf", "--", lock_dir)


def lock_holder(lock_dir: str) -> Command:
    return read_file(posixpath.join(lock_dir, _HOLDER_FILE))


# --------------------------------------------------------------------------- docker


def _compose(project: str, file: str, *args: str) -> Argv:
    return ("docker", "compose", "-p", project, "-f", file, *args)


def compose_up(
    project: str,
    file: str,
    services: Sequence[str] = (),
    *,
    wait: bool = False,
    wait_timeout: int | None = None,
) -> Command:
    args = ["up", "-d", "--remove-orphans"]
    if wait:
        args.append("--wait")
        if wait_timeout is not None:
            args += ["--wait-timeout", str(wait_timeout)]
    if services:
        args += ["--", *services]
    return Command(_compose(project, file, *args), mutates=True)


def compose_ps(project: str, file: str) -> Command:
    return Command(_compose(project, file, "ps", "--all", "--format", "json"), mutates=False)


def parse_compose_ps(stdout: str) -> list[dict[str, object]]:
    """compose v2 prints either one JSON array or one JSON object per line."""
    text = stdout.strip()
    if not text:
        return []
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def compose_config_hash(project: str, file: str) -> Command:
    return Command(_compose(project, file, "config", "--hash", "*"), mutates=False)


def parse_config_hash(stdout: str) -> dict[str, str]:
    """`service hash` lines -> {service: hash}."""
    pairs = (line.split() for line in stdout.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def network_create(name: str, subnet: str) -> Command:
    """Create the fleet's docker network unless it exists already."""
    script = (
        'docker network inspect -- "$1" >/dev/null 2>&1 || '
        'docker network create --subnet "$2" -- "$1"'
    )
    return _sh(script, name, subnet, mutates=True)


def docker_inspect(*names: str) -> Command:
    return read_only("docker", "inspect", "--", *names)


def image_inspect(*refs: str) -> Command:
    return read_only("docker", "image", "inspect", "--", *refs)


def docker_pull(ref: str, platform: str) -> Command:
    return mutating("docker", "pull", "--platform", platform, "--", ref)


def docker_version() -> Command:
    # '{{json .}}' works on every docker 20+; `--format json` only from 23.
    return read_only("docker", "version", "--format", "{{json .}}")


# --------------------------------------------------------------------------- facts


def uname_m() -> Command:
    return read_only("uname", "-m")


def df(path: str) -> Command:
    return read_only("df", "-Pk", "--", path)


@dataclass(frozen=True)
class DiskFree:
    total_kib: int
    available_kib: int
    mount: str


def parse_df(stdout: str) -> DiskFree:
    """Last line of `df -Pk`: fs, 1024-blocks, used, available, capacity, mount."""
    fields = stdout.strip().splitlines()[-1].split(None, 5)
    return DiskFree(int(fields[1]), int(fields[3]), fields[5])


def listening_ports() -> Command:
    return read_only("ss", "-ltnH")


def parse_listening_ports(stdout: str) -> set[int]:
    """Ports from `ss -ltnH` local addresses (`0.0.0.0:22`, `[::]:80`, `*:8080`)."""
    ports: set[int] = set()
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rpartition(":")[2].isdigit():
            ports.add(int(fields[3].rpartition(":")[2]))
    return ports


def nvidia_smi_query(fields: Sequence[str]) -> Command:
    return read_only(
        "nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"
    )


# --------------------------------------------------------------------------- releases


def extract_release(deploy_root: str, tmp_dir: str, release_dir: str) -> Command:
    """Unpack the release tar (stdin) at deploy_root, then rename its temp dir into place.

    The tar carries `releases/.tmp-<id>/...` (env files already 0600 in the archive, kept
    with -p) and new files of the content-addressed config store, which are never
    overwritten (`--skip-old-files`).
    """
    script = (
        'umask 077 && mkdir -p -- "$1/releases" "$1/configs" && '
        'tar -x -p --no-same-owner --skip-old-files -C "$1" -f - && '
        'mv -T -- "$1/$2" "$1/$3"'
    )
    return _sh(script, deploy_root, tmp_dir, release_dir, mutates=True)


def list_releases(deploy_root: str) -> Command:
    return _sh('ls -1 -- "$1/releases" 2>/dev/null || true', deploy_root, mutates=False)


def docker_ps_all() -> Command:
    """Every container on the engine, one JSON object per line."""
    return read_only("docker", "ps", "--all", "--no-trunc", "--format", "{{json .}}")


def compose_remove(project: str, file: str, services: Sequence[str]) -> Command:
    """Stop and remove these services' containers (volumes are kept)."""
    return Command(_compose(project, file, "rm", "--stop", "--force", "--", *services), mutates=True)


def infra_ready(deploy_root: str, network: str | None, directories: Sequence[str] = ("releases",)) -> Command:
    """Prints `ready` when every deploy dir (and the fleet network, when given) exists."""
    script = (
        'root=$1; net=$2; shift 2; for d; do [ -d "$root/$d" ] || { echo missing; exit 0; }; done; '
        'if [ -n "$net" ] && ! docker network inspect -- "$net" >/dev/null 2>&1; then echo missing; exit 0; fi; '
        'echo ready'
    )
    return _sh(script, deploy_root, network or "", *directories, mutates=False)


def release_manifests(deploy_root: str) -> Command:
    """`current` target, then every release's release.json, one per line (compacted)."""
    script = (
        'readlink -- "$1/current" || echo; '
        'for d in "$1"/releases/*/; do [ -f "$d/release.json" ] && tr -d "\\n" < "$d/release.json" && echo; done; true'
    )
    return _sh(script, deploy_root, mutates=False)


def carry_env_files(current: str, release: str) -> Command:
    """Copy env files the new release lacks (other phases' services) from the current one, 0600 kept."""
    script = (
        'umask 077; mkdir -p -- "$2/env"; for f in "$1"/env/*.env; do [ -f "$f" ] || continue; '
        'n="$2/env/$(basename -- "$f")"; [ -e "$n" ] || cp -p -- "$f" "$n"; done; true'
    )
    return _sh(script, current, release, mutates=True)
