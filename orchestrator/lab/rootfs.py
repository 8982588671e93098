"""The contents of lab image layers, gathered from this machine's Debian files.

Layer sets, stacked per image (see images.py):

- `base`: static busybox with its applets, a `curl` shim over busybox `wget`, `/etc/passwd`,
  and the two entry helpers every image uses (`swarm-entrypoint`, `swarm-faults`).
- `python`: Debian's python3.11 interpreter, its `ldd` libraries and a trimmed stdlib
  (with the host's `.pyc` files, whose source mtimes the layer keeps).
- `standins`: `orchestrator/lab/standins/*.py` under /opt/swarm-standin.
- `redis`, `haproxy`, `postgres`, `prometheus`: the real Debian binaries plus their `ldd`
  libraries (PostgreSQL 15 with its share/ and lib/ trees, without the LLVM JIT).
- `litellm` (pypi.py): the real LiteLLM proxy and its dependencies from PyPI.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import RuntimeFailure
from orchestrator.lab import oci
from orchestrator.lab.oci import Entry

STANDIN_DIR = Path(__file__).parent / "standins"
STANDIN_ROOT = "/opt/swarm-standin"
PYTHON = Path("/usr/bin/python3.11")
PYTHON_LIB = Path("/usr/lib/python3.11")
BUSYBOX = Path("/bin/busybox")
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_STDLIB_SKIP = frozenset({
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "distutils",
    "pydoc_data", "site-packages", "dist-packages", "venv", "config-3.11-x86_64-linux-gnu",
})
_DYNLOAD_SKIP = re.compile(r"^(_test|_xx|xx|_curses|readline|nis|ossaudiodev|_dbm|_tkinter)")
_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
postgres:x:70:70:postgres:/var/lib/postgresql:/bin/sh
haproxy:x:99:99:haproxy:/var/lib/haproxy:/bin/false
redis:x:999:1000:redis:/data:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
postgres:x:70:
haproxy:x:99:
redis:x:1000:
nogroup:x:65534:
"""

CURL_SHIM = r"""#!/bin/sh
# curl shim of the swarm lab: the subset compose healthchecks use, on busybox wget.
# -f -s -S -L -k (accepted), -o FILE, -H HEADER, -d DATA, -m SECONDS, -X (ignored).
out=-; data=; timeout=; url=; hdrs=
nl='
'
set -f
while [ $# -gt 0 ]; do
  arg=$1; shift
  case "$arg" in
    --output) out=$1; shift;;
    --header) hdrs="$hdrs$1$nl"; shift;;
    --data|--data-raw|--data-binary) data=$1; shift;;
    --max-time|--connect-timeout) timeout=$1; shift;;
    --request|--user|--user-agent|--referer) shift;;
    --*) ;;
    -?*) flags=${arg#-}
      while [ -n "$flags" ]; do
        c=${flags%"${flags#?}"}; flags=${flags#?}
        case "$c" in
          o|H|X|d|m|u|A|e)
            if [ -n "$flags" ]; then val=$flags; flags=; else val=$1; shift; fi
            case "$c" in
              o) out=$val;; H) hdrs="$hdrs$val$nl";; d) data=$val;; m) timeout=$val;;
            esac;;
        esac
      done;;
    *) url=$arg;;
  esac
done
[ -n "$url" ] || { echo "curl: no URL specified" >&2; exit 2; }
set -- -q -O "$out"
[ -n "$timeout" ] && set -- "$@" -T "${timeout%.*}"
[ -n "$data" ] && set -- "$@" --post-data "$data"
IFS=$nl
for h in $hdrs; do set -- "$@" --header "$h"; done
unset IFS
exec wget "$@" "$url"
"""

ENTRYPOINT = """#!/bin/sh
# swarm-entrypoint DEFAULT [ARGS...]: run ARGS when it names a program, else DEFAULT ARGS
# (the convention of official images' docker-entrypoint.sh).
default=$1; shift
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ] && command -v "$1" >/dev/null 2>&1; then
  exec swarm-faults "$@"
fi
exec swarm-faults "$default" "$@"
"""

FAULTS = """#!/bin/sh
# swarm-faults PROGRAM [ARGS...]: apply SWARM_STANDIN_MODE to a real binary.
# Python stand-ins apply the mode themselves; this wrapper serves redis and haproxy.
mode=${SWARM_STANDIN_MODE:-healthy}
if [ -n "${SWARM_STANDIN_SELF:-}" ]; then
  # `IMAGE <program> --version` (preflight --smoke) answers and exits, as the real binary would.
  case " $* " in *" --version "*|*" -V "*|*" -v "*|*" version "*)
    echo "$1 ${SWARM_STANDIN_VERSION:-0.0.0} (swarm lab stand-in)"; exit 0;;
  esac
fi
case "$mode" in
  never-healthy)
    if [ -z "${SWARM_STANDIN_SELF:-}" ]; then
      echo "swarm-faults: never-healthy, not starting $1" >&2
      trap 'exit 0' TERM INT
      while :; do sleep 3600 & wait $!; done
    fi;;
  slow-start:*) [ -z "${SWARM_STANDIN_SELF:-}" ] && sleep "${mode#slow-start:}";;
  die-after:*)
    if [ -z "${SWARM_STANDIN_SELF:-}" ]; then
      "$@" & child=$!
      trap 'kill $child 2>/dev/null; exit 0' TERM INT
      sleep "${mode#die-after:}" & wait $!
      kill $child 2>/dev/null
      echo "swarm-faults: die-after reached, exiting 1" >&2
      exit 1
    fi;;
esac
exec "$@"
"""


def base_entries() -> list[Entry]:
    """busybox + applets, curl shim, users, entry helpers, standard directories."""
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    entries = [oci.host_file("/bin/busybox", BUSYBOX, 0o755)]
    entries += [oci.symlink_entry(f"/bin/{name}", "busybox") for name in applets
                if name not in ("busybox", "[[", "linuxrc")]
    entries += [
        oci.script_entry("/usr/bin/curl", CURL_SHIM),
        oci.script_entry("/usr/local/bin/swarm-entrypoint", ENTRYPOINT),
        oci.script_entry("/usr/local/bin/swarm-faults", FAULTS),
        oci.file_entry("/etc/passwd", PASSWD),
        oci.file_entry("/etc/group", GROUP),
        oci.dir_entry("/tmp", 0o1777), oci.dir_entry("/var/tmp", 0o1777),
        oci.dir_entry("/root", 0o700), oci.dir_entry("/run"), oci.dir_entry("/data"),
        oci.dir_entry("/usr/sbin"), oci.dir_entry("/sbin"), oci.dir_entry("/usr/local/sbin"),
        oci.symlink_entry("/var/run", "/run"),
    ]
    return entries


def ldd_paths(binary: Path) -> list[Path]:
    """Shared libraries (and the loader) `binary` needs, as ldd names them."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return []  # static binaries: "not a dynamic executable"
    return [Path(m.group(1)) for m in map(_LDD_LINE.search, result.stdout.splitlines()) if m]


def binary_entries(binaries: list[Path]) -> list[Entry]:
    """Binaries at their own paths plus every library ldd lists, at ldd's path."""
    entries: dict[str, Entry] = {}
    for binary in binaries:
        if not binary.exists():
            raise RuntimeFailure(f"lab image: {binary} is missing",
                                 hint="run `swarm lab up` as root so it installs packages")
        entries[str(binary)] = oci.host_file(str(binary), binary)
        for lib in ldd_paths(binary):
            entries.setdefault(str(lib), oci.host_file(str(lib), lib, 0o755))
    return list(entries.values())


def _stdlib_files() -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(PYTHON_LIB):
        current = Path(dirpath)
        if current == PYTHON_LIB:
            dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP]
        dirnames[:] = [d for d in dirnames if d != "tests"]
        for name in filenames:
            if _keep_stdlib_file(current, name):
                yield current / name


def _keep_stdlib_file(folder: Path, name: str) -> bool:
    if folder.name == "lib-dynload":
        return name.endswith(".so") and not _DYNLOAD_SKIP.match(name)
    if folder.name == "__pycache__":
        return name.endswith(".cpython-311.pyc")
    return name.endswith(".py")


def python_entries() -> list[Entry]:
    """Debian's python3.11 with its libraries and a trimmed stdlib."""
    files = [p for p in _stdlib_files() if p.exists()]  # skips dangling symlinks
    dynload = [p for p in files if p.suffix == ".so"]
    entries = {e.path: e for e in binary_entries([PYTHON, *dynload])}
    for path in files:
        entries.setdefault(str(path), oci.host_file(str(path), path))
    entries["/usr/bin/python3"] = oci.symlink_entry("/usr/bin/python3", "python3.11")
    entries["/usr/bin/python"] = oci.symlink_entry("/usr/bin/python", "python3.11")
    return list(entries.values())


VAULT_UID, VAULT_GID = 100, 1000  # the `vault` user of the real hashicorp/vault image


def standin_entries() -> list[Entry]:
    """The stand-in scripts, consul.py and vault.py included when present, and Vault's data
    directories owned by the vault user as the real image makes them (`mkdir -p /vault/file
    /vault/logs && chown -R vault:vault /vault`): a named volume mounted on /vault/file starts
    with that owner, so the stand-in, running as 100:1000, can persist its storage there (a
    root-owned volume kept it in memory only, lost on restart). In this shared layer because
    the catalog (images.py) is not this change's; an empty /vault is harmless elsewhere."""
    scripts = [oci.host_file(f"{STANDIN_ROOT}/{p.name}", p, 0o644)
               for p in sorted(STANDIN_DIR.glob("*.py")) if p.name != "__init__.py"]
    vault = [oci.dir_entry("/vault", 0o755, VAULT_UID, VAULT_GID),
             oci.dir_entry("/vault/file", 0o755, VAULT_UID, VAULT_GID),
             oci.dir_entry("/vault/logs", 0o755, VAULT_UID, VAULT_GID)]
    return scripts + vault


def has_standin(name: str) -> bool:
    return (STANDIN_DIR / f"{name}.py").is_file()


def redis_entries() -> list[Entry]:
    entries = binary_entries([Path("/usr/bin/redis-server"), Path("/usr/bin/redis-cli")])
    return entries + [oci.dir_entry("/data", 0o755, 999, 1000)]


def haproxy_entries() -> list[Entry]:
    entries = binary_entries([Path("/usr/sbin/haproxy")])
    return entries + [oci.dir_entry("/usr/local/etc/haproxy"),
                      oci.dir_entry("/var/lib/haproxy", 0o755, 99, 99)]


PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_LIB = Path("/usr/lib/postgresql/15/lib")
PG_SHARE = Path("/usr/share/postgresql/15")
PG_PROGRAMS = ("postgres", "initdb", "pg_ctl", "psql", "pg_isready", "pg_dump", "pg_dumpall", "pg_restore")
_PG_LIB_SKIP = ("llvmjit",)  # the JIT drags in libLLVM (~100 MB); jit is off without it
ZONEINFO = Path("/usr/share/zoneinfo")
LOCALE_C_UTF8 = Path("/usr/lib/locale/C.utf8")


def _tree_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def postgres_entries() -> list[Entry]:
    """Debian's PostgreSQL 15: server, initdb, pg_ctl, psql, pg_isready, the dump and restore
    programs (pg_dump, pg_dumpall, pg_restore, as in the real image), lib/ and share/."""
    libs = [p for p in sorted(PG_LIB.glob("*.so")) if not p.name.startswith(_PG_LIB_SKIP)]
    entries = binary_entries([PG_BIN / name for name in PG_PROGRAMS] + libs)
    entries += [oci.host_file(str(p), p) for p in _tree_files(PG_SHARE)]
    entries += [oci.host_file(str(ZONEINFO / name), ZONEINFO / name)
                for name in ("UTC", "Etc/UTC") if (ZONEINFO / name).exists()]
    if LOCALE_C_UTF8.is_dir():  # initdb --locale=C.UTF-8 (glibc's locale files)
        entries += [oci.host_file(str(p), p) for p in _tree_files(LOCALE_C_UTF8)]
    entries += [oci.symlink_entry(f"/usr/local/bin/{name}", str(PG_BIN / name))
                for name in PG_PROGRAMS]
    return entries + [oci.dir_entry("/var/lib/postgresql", 0o755, 70, 70),
                      oci.dir_entry("/var/lib/postgresql/data", 0o700, 70, 70),
                      oci.dir_entry("/run/postgresql", 0o2775, 70, 70),
                      oci.script_entry("/usr/local/bin/docker-entrypoint.sh",
                                       POSTGRES_ENTRYPOINT)]


def prometheus_entries() -> list[Entry]:
    """Debian's Prometheus server and promtool; /prometheus owned by nobody, as upstream."""
    entries = binary_entries([Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")])
    entries += [oci.symlink_entry("/bin/prometheus", "/usr/bin/prometheus"),
                oci.symlink_entry("/bin/promtool", "/usr/bin/promtool")]
    return entries + [oci.dir_entry("/etc/prometheus"),
                      oci.dir_entry("/prometheus", 0o755, 65534, 65534)]


def python_wrapper(program: str, script: str, *prefix: str) -> Entry:
    """`/usr/local/bin/<program>` running a stand-in with the packed Python."""
    args = " ".join(prefix)
    text = f'#!/bin/sh\nexec python3 {STANDIN_ROOT}/{script} {args} "$@"\n'.replace("  ", " ")
    return oci.script_entry(f"/usr/local/bin/{program}", text)


def entrypoint_script(default: str) -> Entry:
    """`docker-entrypoint.sh` as official images name it, deferring to swarm-entrypoint."""
    text = f'#!/bin/sh\nexec swarm-entrypoint {default} "$@"\n'
    return oci.script_entry("/usr/local/bin/docker-entrypoint.sh", text)


REDIS_ENTRYPOINT = """#!/bin/sh
# redis image entrypoint: flags alone mean redis-server; no config file -> protected-mode off
set -e
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ]; then
  case " $* " in *" --protected-mode "*) ;; *)
    if [ -z "${2:-}" ] || [ "${2#-}" != "$2" ]; then set -- "$@" --protected-mode no; fi;;
  esac
fi
exec swarm-faults "$@"
"""

HAPROXY_ENTRYPOINT = """#!/bin/sh
# haproxy image entrypoint: flags alone mean haproxy; run it master-worker in foreground
set -e
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then set -- haproxy "$@"; fi
if [ "$1" = haproxy ]; then shift; set -- haproxy -W -db "$@"; fi
exec swarm-faults "$@"
"""

POSTGRES_ENTRYPOINT = """#!/bin/sh
# postgres image entrypoint, as the official image's (docker-library/postgres): flags alone
# mean postgres; an empty PGDATA is initialised first with POSTGRES_USER, POSTGRES_PASSWORD
# (scram-sha-256 for TCP, trust on the container's own socket) and POSTGRES_DB;
# `postgres --version` / `--help` only print, as there.
set -e
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
want_help=
for arg; do case "$arg" in -'?'|--help|--describe-config|-V|--version) want_help=1;; esac; done
if [ "$1" = postgres ] && [ -z "$want_help" ] && [ "$(id -u)" = 0 ]; then
  # as root (no `user:`): own the data and socket dirs, then run as postgres (gosu there)
  mkdir -p "${PGDATA:?}" /run/postgresql
  chown -R postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec su -p -s /bin/sh postgres -c 'exec "$0" "$@"' "$0" "$@"
fi
if [ "$1" = postgres ] && [ -z "$want_help" ] && [ ! -s "${PGDATA:?}/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}; db=${POSTGRES_DB:-$user}
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "Error: Database is uninitialized and superuser password is not specified." >&2
    echo "       You must specify POSTGRES_PASSWORD to a non-empty value." >&2
    exit 1
  fi
  mkdir -p "$PGDATA"; chmod 700 "$PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  TZ=UTC initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} \
    -D "$PGDATA"
  rm -f "$pwfile"
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    printf 'CREATE DATABASE "%s";\n' "$db" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "PostgreSQL init process complete; ready for start up."
fi
exec swarm-faults "$@"
"""

# The configuration prom/prometheus ships in /etc/prometheus (Prometheus scraping itself).
PROMETHEUS_DEFAULT_CONFIG = """global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["localhost:9090"]
"""

VLLM_API_SERVER = f"""import runpy, sys
sys.path.insert(0, "{STANDIN_ROOT}")
sys.argv[0] = "vllm.entrypoints.openai.api_server"
runpy.run_path("{STANDIN_ROOT}/vllm.py", run_name="__main__")
"""

VLLM_CLI = """#!/bin/sh
# `vllm serve MODEL [ARGS]` as the real CLI
[ "$1" = serve ] && shift
exec python3 -m vllm.entrypoints.openai.api_server "$@"
"""


def vllm_entries() -> list[Entry]:
    pkg = "/usr/local/lib/python3.11/dist-packages/vllm"
    return [
        oci.file_entry(f"{pkg}/__init__.py", "__version__ = '0.6.3'\n"),
        oci.file_entry(f"{pkg}/entrypoints/__init__.py", ""),
        oci.file_entry(f"{pkg}/entrypoints/openai/__init__.py", ""),
        oci.file_entry(f"{pkg}/entrypoints/openai/api_server.py", VLLM_API_SERVER),
        oci.script_entry("/usr/local/bin/vllm", VLLM_CLI),
    ]
