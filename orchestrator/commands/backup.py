"""Backups on a node: fixed scripts, data as $1.., one label each (docs/backup.md).

A backup of service S is written into `<root>/backups/S/.tmp-<id>` (0700, files 0600:
`umask 077`), summed (`SHA256SUMS`, as `sha256sum -c` reads it), given its manifest, and
only then renamed to `<root>/backups/S/<id>`: a backup that is listed is complete. Each
method's dump runs against the service's running container, found by its compose labels;
the programs are the service's own (`pg_dump`, `redis-cli`, Qdrant's API) or docker's
(`pause`, `cp`, `run --volumes-from`, as docker's volume backup guide does it).

No secret reaches an argument here: PostgreSQL is dumped over the container's trusted
socket, redis-cli authenticates from `REDISCLI_AUTH` in the container's own environment.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

from orchestrator.commands.base import Command, sh

BACKUP_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z")
"""A backup's id: the UTC time it was taken, `20261201T031500Z` (sorts by time)."""
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")
"""A file, database or collection name that can be a path segment as it is."""
SUMS_FILE = "SHA256SUMS"
MANIFEST_FILE = "manifest.json"
NO_CONTAINER_EXIT = 3

# The running container of compose project $P, service $S -> $c (exit 3 when there is none).
_FIND = (
    'c=$(docker ps -q --filter "label=com.docker.compose.project=$P" '
    '--filter "label=com.docker.compose.service=$S" --filter status=running | head -n 1) || exit; '
    f'[ -n "$c" ] || {{ echo "no running container of $S in $P" >&2; exit {NO_CONTAINER_EXIT}; }}; '
)
# Any container of $P/$S, running or stopped (a restore works on a stopped one) -> $c.
_FIND_ANY = (
    'c=$(docker ps -aq --filter "label=com.docker.compose.project=$P" '
    '--filter "label=com.docker.compose.service=$S" | head -n 1) || exit; '
    f'[ -n "$c" ] || {{ echo "no container of $S in $P" >&2; exit {NO_CONTAINER_EXIT}; }}; '
)
# A helper container with $c's volumes, image and user (docker's volume backup recipe).
_HELPER = (
    'img=$(docker inspect -f "{{.Config.Image}}" "$c") && '
    'usr=$(docker inspect -f "{{.Config.User}}" "$c") || exit; '
    'helper() { if [ -n "$usr" ]; then set -- --user "$usr" "$@"; fi; '
    'docker run --rm -i --network none --volumes-from "$c" "$@"; }; '
)


def check_name(value: str, what: str) -> str:
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r}: letters, digits and ._- only (not starting with . or -)")
    return value


def check_id(value: str) -> str:
    if not BACKUP_ID.fullmatch(value):
        raise ValueError(f"not a backup id like 20261201T031500Z: {value!r}")
    return value


def tmp_name(backup_id: str) -> str:
    return f".tmp-{check_id(backup_id)}"


# ---------------------------------------------------------------- the frame of every backup


def backup_prepare(service_dir: str, backup_id: str) -> Command:
    """The service's directory (0700) without what a cut-off run left, and a fresh temp dir."""
    script = ('umask 077 && mkdir -p -- "$1" && chmod 700 -- "$1" && rm -rf -- "$1"/.tmp-* && '
              'mkdir -- "$1/$2"')
    return sh(script, service_dir, tmp_name(backup_id), mutates=True, label="backup-prepare")


_SUMS = (
    'cd -- "$1" && find . -type d -exec chmod 700 {} + && find . -type f -exec chmod 600 {} + && '
    f'find . -type f ! -name {SUMS_FILE} ! -name {MANIFEST_FILE} | LC_ALL=C sort | '
    f'sed "s,^\\./,," | while IFS= read -r f; do sha256sum -- "$f"; done > {SUMS_FILE} && '
    f'chmod 600 {SUMS_FILE} && echo "==sums" && cat {SUMS_FILE} && echo "==sizes" && '
    f'find . -type f ! -name {MANIFEST_FILE} -exec wc -c {{}} +'
)


def backup_sums(directory: str) -> Command:
    """Files 0600 and directories 0700, whatever wrote them; SHA256SUMS for every file; print
    it, then each file's size."""
    return sh(_SUMS, directory, mutates=True, label="backup-sums")


def parse_sums(stdout: str) -> tuple[dict[str, str], dict[str, int], str]:
    """`backup_sums` output -> ({file: sha256}, {file: bytes}, the SHA256SUMS text)."""
    _, _, rest = stdout.partition("==sums\n")
    sums_text, _, sizes_text = rest.partition("==sizes\n")
    sums: dict[str, str] = {}
    for line in sums_text.splitlines():
        digest, _, name = line.partition("  ")
        if digest and name:
            sums[name] = digest
    sizes: dict[str, int] = {}
    for line in sizes_text.splitlines():
        count, _, name = line.strip().partition(" ")
        if count.isdigit() and name and name != "total":
            sizes[name.removeprefix("./")] = int(count)
    return sums, sizes, sums_text


def backup_commit(service_dir: str, backup_id: str) -> Command:
    """The manifest (stdin) into the temp dir, then the temp dir renamed into place whole."""
    script = (f'umask 077 && cat > "$1/$2/{MANIFEST_FILE}" && chmod 600 -- "$1/$2/{MANIFEST_FILE}" && '
              'chmod 700 -- "$1/$2" && mv -T -- "$1/$2" "$1/$3"')
    return sh(script, service_dir, tmp_name(backup_id), backup_id, mutates=True, label="backup-commit")


def backup_discard(service_dir: str, backup_id: str) -> Command:
    """Remove a backup that failed half-way (its temp dir)."""
    return sh('rm -rf -- "$1/$2"', service_dir, tmp_name(backup_id), mutates=True, label="backup-discard")


def backup_prune(service_dir: str, backup_ids: Sequence[str]) -> Command:
    """Delete these backups of one service (retention); nothing else."""
    ids = [check_id(i) for i in backup_ids]
    return sh('d=$1; shift; for b; do rm -rf -- "$d/$b"; done', service_dir, *ids, mutates=True,
              label="backup-prune")


def backup_verify(directory: str) -> Command:
    """`sha256sum -c` the backup's own SHA256SUMS (before anything restores from it)."""
    return sh(f'cd -- "$1" && sha256sum --quiet -c {SUMS_FILE}', directory, mutates=False,
              label="backup-verify")


_LIST = (
    'root=$1; shift; echo "now $(date +%s)"; for s; do d="$root/backups/$s"; [ -d "$d" ] || continue; '
    'for b in "$d"/*; do n=${b##*/}; case "$n" in '
    '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z) ;; *) continue;; esac; '
    f'm=$(cat -- "$b/{MANIFEST_FILE}" 2>/dev/null | tr -d "\\n"); printf "%s\\t%s\\t%s\\n" "$s" "$n" "$m"; '
    'done; done'
)


def list_backups(deploy_root: str, services: Sequence[str]) -> Command:
    """The node's clock, then one `service<TAB>id<TAB>manifest` line per complete backup."""
    names = [check_name(s, "service") for s in services]
    return sh(_LIST, deploy_root, *names, mutates=False, label="list-backups")


_NEWEST = (
    'root=$1; shift; echo "now $(date +%s)"; for s; do d="$root/backups/$s"; n=-; '
    'if [ -d "$d" ]; then n=$(ls -1 -- "$d" | grep -x "[0-9]\\{8\\}T[0-9]\\{6\\}Z" | sort | tail -n 1); fi; '
    'echo "$s ${n:--}"; done'
)


def newest_backups(deploy_root: str, services: Sequence[str]) -> Command:
    """The node's clock, then `service id` (or `service -`) for each service's newest backup."""
    names = [check_name(s, "service") for s in services]
    return sh(_NEWEST, deploy_root, *names, mutates=False, label="newest-backups")


# ---------------------------------------------------------------- dumps, per method

_PG_DUMP = (
    'P=$1 S=$2 D=$3 U=$4; shift 4; umask 077; ' + _FIND +
    'docker exec "$c" pg_dumpall -U "$U" --globals-only > "$D/globals.sql" || exit; '
    'for db; do docker exec "$c" pg_dump -U "$U" --create -d "$db" > "$D/$db.sql" || exit; done'
)


def pg_dump(project: str, service: str, directory: str, user: str, databases: Sequence[str]) -> Command:
    """pg_dumpall --globals-only (roles) and a plain `pg_dump --create` of each database."""
    dbs = [check_name(d, "database") for d in databases]
    return sh(_PG_DUMP, project, service, directory, user, *dbs, mutates=True, label="pg-dump")


_PG_RESTORE = (
    'P=$1 S=$2 D=$3 U=$4; shift 4; ' + _FIND +
    'for db; do '
    'docker exec -i "$c" sh -c \'psql -X -q -v ON_ERROR_STOP=1 -U "$1" -d postgres -v db="$2" <<"EOF"\n'
    'DROP DATABASE IF EXISTS :"db" WITH (FORCE);\n'
    'EOF\n\' sh "$U" "$db" </dev/null || exit; '
    'docker exec -i "$c" psql -X -q -v ON_ERROR_STOP=1 -U "$U" -d postgres < "$D/$db.sql" >/dev/null || exit; '
    'echo "restored database $db"; done'
)


def pg_restore(project: str, service: str, directory: str, user: str, databases: Sequence[str]) -> Command:
    """Each database dropped (WITH FORCE) and recreated from its dump, stopping at the first error."""
    dbs = [check_name(d, "database") for d in databases]
    return sh(_PG_RESTORE, project, service, directory, user, *dbs, mutates=True, label="pg-restore")


_REDIS_INFO = ('info() { docker exec "$c" redis-cli info persistence | tr -d "\\r" | '
               'sed -n "s/^$1://p"; }; ')
_REDIS_BGSAVE = (
    'P=$1 S=$2 D=$3 F=$4 T=$5; umask 077; ' + _FIND + _REDIS_INFO +
    'end=$(( $(date +%s) + T )); '
    'while [ "$(info rdb_bgsave_in_progress)" = 1 ]; do '
    '[ "$(date +%s)" -lt "$end" ] || { echo "a BGSAVE was still running after ${T}s" >&2; exit 1; }; sleep 0.5; done; '
    'before=$(info rdb_saves); '
    'case "$before" in ""|*[!0-9]*) echo "redis-cli info persistence: no rdb_saves (${before})" >&2; exit 1;; esac; '
    'out=$(docker exec "$c" redis-cli bgsave schedule) || exit; '
    'case "$out" in *started*|*scheduled*) ;; *) echo "BGSAVE: $out" >&2; exit 1;; esac; '
    'while :; do n=$(info rdb_saves); b=$(info rdb_bgsave_in_progress); '
    '[ "${n:-0}" -gt "$before" ] && [ "$b" = 0 ] && break; '
    '[ "$(date +%s)" -lt "$end" ] || { echo "BGSAVE did not finish within ${T}s" >&2; exit 1; }; sleep 0.2; done; '
    '[ "$(info rdb_last_bgsave_status)" = ok ] || { echo "BGSAVE failed: see the redis log" >&2; exit 1; }; '
    'docker exec "$c" cat -- "$F" > "$D/dump.rdb"'
)


def redis_bgsave(project: str, service: str, directory: str, rdb_path: str, timeout_s: int) -> Command:
    """BGSAVE (after any save in progress), wait for that very save to end, copy its RDB file."""
    return sh(_REDIS_BGSAVE, project, service, directory, rdb_path, str(timeout_s), mutates=True,
              label="redis-bgsave")


_REDIS_RESTORE = (
    'P=$1 S=$2 D=$3 DATA=$4 RDB=$5 AOFDIR=$6 AOF=$7; ' + _FIND_ANY + _HELPER +
    'helper --entrypoint sh "$img" -c \''
    'set -e; d=$1; cat > "$d/.swarm-restore.rdb"; rm -rf -- "$d/$3"; mkdir -- "$d/$3"; '
    'cp -- "$d/.swarm-restore.rdb" "$d/$3/$4.1.base.rdb"; '
    'printf "file %s seq 1 type b\\n" "$4.1.base.rdb" > "$d/$3/$4.manifest"; '
    'mv -f -- "$d/.swarm-restore.rdb" "$d/$2"\' sh "$DATA" "$RDB" "$AOFDIR" "$AOF" < "$D/dump.rdb"'
)


def redis_restore(project: str, service: str, directory: str, data_dir: str, rdb_file: str,
                  aof_dir: str, aof_file: str) -> Command:
    """Into the stopped container's volume: the RDB file, and the same file as the base of a
    fresh multi-part AOF (its manifest names it), so the data loads with appendonly on or off."""
    names = [check_name(n, "file") for n in (rdb_file, aof_dir, aof_file)]
    return sh(_REDIS_RESTORE, project, service, directory, data_dir, *names, mutates=True,
              label="redis-restore")


_QDRANT_FETCH = (
    'P=$1 S=$2 D=$3 SNAP=$4; shift 4; umask 077; ' + _FIND +
    'cat > "$D/collections.json" || exit; base=${SNAP##*/}; while [ "$#" -ge 2 ]; do mkdir -p -- "$D/$base/$1" && '
    'docker cp "$c:$SNAP/$1/$2" - | tar -xOf - > "$D/$base/$1/$2" || exit; shift 2; done'
)


def qdrant_fetch(project: str, service: str, directory: str, snapshots_dir: str,
                 snapshots: Sequence[tuple[str, str]]) -> Command:
    """The index (stdin) as collections.json, then each (collection, snapshot file) Qdrant wrote
    copied out of its container (an empty Qdrant backs up as its empty index)."""
    pairs = [x for c, n in snapshots for x in (check_name(c, "collection"), check_name(n, "snapshot"))]
    return sh(_QDRANT_FETCH, project, service, directory, snapshots_dir.rstrip("/"), *pairs, mutates=True,
              label="qdrant-fetch")


_QDRANT_PUT = (
    'P=$1 S=$2 D=$3 SNAP=$4 COLL=$5 NAME=$6; ' + _FIND +
    'base=${SNAP##*/}; tar -cf - -C "$D" -- "$base/$COLL/$NAME" | docker cp - "$c:${SNAP%/*}/"'
)


def qdrant_put(project: str, service: str, directory: str, snapshots_dir: str, collection: str,
               snapshot: str) -> Command:
    """A snapshot of the backup back into Qdrant's snapshots directory (for `recover`)."""
    snap = snapshots_dir.rstrip("/")
    if posixpath.dirname(snap) in ("", "/"):
        raise ValueError(f"snapshots_dir {snapshots_dir!r} must be a directory below another one")
    return sh(_QDRANT_PUT, project, service, directory, snap, check_name(collection, "collection"),
              check_name(snapshot, "snapshot"), mutates=True, label="qdrant-put")


_VAULT_COPY = (
    'P=$1 S=$2 D=$3 STORE=$4; umask 077; ' + _FIND +
    'docker pause "$c" >/dev/null || exit; trap \'docker unpause "$c" >/dev/null 2>&1\' EXIT HUP INT TERM; '
    'docker cp "$c:$STORE" - > "$D/storage.tar"; rc=$?; '
    'docker unpause "$c" >/dev/null || { echo "could not unpause $S" >&2; exit 1; }; trap - EXIT; exit $rc'
)


def vault_file_copy(project: str, service: str, directory: str, storage_dir: str) -> Command:
    """The storage directory as one tar, taken while the container is frozen (`docker pause`)."""
    return sh(_VAULT_COPY, project, service, directory, storage_dir.rstrip("/"), mutates=True,
              label="vault-file-copy")


_VAULT_RESTORE = (
    'P=$1 S=$2 D=$3 STORE=$4; ' + _FIND_ANY + _HELPER +
    'helper --entrypoint sh "$img" -c \'set -e; cd -- "$1"; rm -rf -- ..?* .[!.]* *; '
    'tar -xf - --strip-components=1\' sh "$STORE" < "$D/storage.tar"'
)


def vault_file_restore(project: str, service: str, directory: str, storage_dir: str) -> Command:
    """The stopped container's storage directory emptied, then filled from the backup's tar."""
    return sh(_VAULT_RESTORE, project, service, directory, storage_dir.rstrip("/"), mutates=True,
              label="vault-file-restore")


# ---------------------------------------------------------------- services around a restore


def compose_stop(project: str, compose_file: str, services: Sequence[str]) -> Command:
    return Command(("docker", "compose", "-p", project, "-f", compose_file, "stop", "--", *services),
                   mutates=True, label="compose-stop")


def compose_start(project: str, compose_file: str, services: Sequence[str]) -> Command:
    return Command(("docker", "compose", "-p", project, "-f", compose_file, "start", "--", *services),
                   mutates=True, label="compose-start")
