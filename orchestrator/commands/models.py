"""The model store on a node (`<deploy_root>/models/<org>/<name>/<revision>/`): list, hash,
receive, install, send, remove — and the short-lived SSH key a direct node-to-node copy uses.

A revision is written into `<revision-dir>.tmp` (the `.tmp` suffix never names a revision: a
revision is a commit), checked file by file against the pinned sha256s with `sha256sum -c`,
and only then renamed into place with its manifest (`.swarm-weights.json`): a revision
directory exists complete and verified, or not at all. Every path is data (`$1…`).
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.commands.base import Command, sh

MANIFEST = ".swarm-weights.json"
TMP_SUFFIX = ".tmp"
KEYS_DIR = ".swarm-keys"

# One line per revision directory: `R <dir>`, then `M <manifest on one line>` when it has one;
# `T <dir>` for a transfer left half way (a .tmp dir), `F <free KiB>` for the store's filesystem.
_LIST = (
    'r=$1/models; [ -d "$r" ] || { echo "F $(df -Pk -- "$1" 2>/dev/null | awk \'NR==2{print $4}\')"; exit 0; }; '
    'find "$r" -mindepth 3 -maxdepth 3 -type d | sort | while IFS= read -r d; do '
    'case "$d" in *.tmp) echo "T $d"; continue;; esac; echo "R $d"; '
    '[ -f "$d/.swarm-weights.json" ] && printf "M " && tr -d "\\n" < "$d/.swarm-weights.json" && echo; done; '
    'echo "F $(df -Pk -- "$r" | awk \'NR==2{print $4}\')"'
)


def list_store(deploy_root: str) -> Command:
    return sh(_LIST, deploy_root, mutates=False, label="models-list")


# OpenSSL's sha256 where the node has it (SHA extensions: 1.2 GB/s here, coreutils' sha256sum
# 0.34 GB/s — measured on this machine, 512 MB): hashing is most of what a copy adds to the wire.
_HASH = ('cd -- "$1" && shift && if command -v openssl >/dev/null 2>&1; '
         'then openssl dgst -sha256 -r -- "$@"; else sha256sum -- "$@"; fi')


def hash_files(directory: str, names: Sequence[str]) -> Command:
    """sha256 of each named file (relative to `directory`): `<hex> *<name>` (openssl) or
    `<hex>  <name>` (sha256sum) lines; a missing file has no line (see `parse_hashes`)."""
    return sh(_HASH, directory, *names, mutates=False, label="models-hash")


def parse_hashes(stdout: str) -> dict[str, str]:
    """`hash_files`' answer -> {name: sha256}."""
    out = {}
    for line in stdout.splitlines():
        digest, _, name = line.partition(" ")
        name = name[1:] if name[:1] in ("*", " ") else name
        if len(digest) == 64 and name:
            out[name] = digest.lower()
    return out


def size_of(directory: str) -> Command:
    """Bytes under a directory so far (a transfer's progress); 0 when it is not there yet."""
    return sh('du -sb -- "$1" 2>/dev/null | cut -f1 || echo 0', directory, mutates=False, label="models-progress")


def receive_tar(tmp_dir: str) -> Command:
    """Unpack a tar stream from stdin into the revision's temp dir (made empty first)."""
    return sh('rm -rf -- "$1" && mkdir -p -- "$1" && tar -C "$1" -xf -', tmp_dir, mutates=True,
              label="models-receive")


def receive_file(tmp_dir: str, name: str) -> Command:
    """Write stdin to one file of the revision's temp dir."""
    return sh('mkdir -p -- "$(dirname -- "$1/$2")" && cat > "$1/$2"', tmp_dir, name, mutates=True,
              label="models-receive-file")


def start_tmp(tmp_dir: str) -> Command:
    return sh('rm -rf -- "$1" && mkdir -p -- "$1"', tmp_dir, mutates=True, label="models-start")


def send_tar(directory: str, names: Sequence[str]) -> Command:
    """A tar stream of the named files on stdout (the relay's source side)."""
    return sh('cd -- "$1" && shift && tar -cf - -- "$@"', directory, *names, mutates=False, label="models-send")


def install(tmp_dir: str, final: str) -> Command:
    """Rename a checked revision's temp dir into place (replacing a bad copy there)."""
    script = 'mkdir -p -- "$(dirname -- "$2")" && rm -rf -- "$2" && mv -T -- "$1" "$2"'
    return sh(script, tmp_dir, final, mutates=True, label="models-install")


def remove_dirs(paths: Sequence[str]) -> Command:
    """Remove revision directories (and the org/name directories they leave empty)."""
    script = ('for d; do rm -rf -- "$d"; rmdir -- "$(dirname -- "$d")" "$(dirname -- "$(dirname -- "$d")")" '
              '2>/dev/null; done; true')
    return sh(script, *paths, mutates=True, label="models-remove")


def references(deploy_root: str) -> Command:
    """Every kept release's compose.yml lines that name the model store (what gc must keep)."""
    script = ('for f in "$1"/releases/*/compose.yml "$1"/releases/.tmp-*/compose.yml; do '
              '[ -f "$f" ] && grep -F -- "$1/models/" "$f" | sed "s|^|$(basename -- "$(dirname -- "$f")") |"; '
              'done; true')
    return sh(script, deploy_root, mutates=False, label="models-references")


# --- a direct copy between two nodes ------------------------------------------------------


def authorize_key(line_count_marker: str) -> Command:
    """Append stdin (one authorized_keys line) to ~/.ssh/authorized_keys, creating it 0600."""
    script = ('umask 077 && mkdir -p -- "$HOME/.ssh" && cat >> "$HOME/.ssh/authorized_keys" && '
              'grep -c -F -- "$1" "$HOME/.ssh/authorized_keys" >/dev/null')
    return sh(script, line_count_marker, mutates=True, label="models-authorize")


def revoke_key(marker: str) -> Command:
    """Drop every authorized_keys line carrying the marker (a copy's short-lived key)."""
    script = ('f="$HOME/.ssh/authorized_keys"; [ -f "$f" ] || exit 0; umask 077; '
              'grep -v -F -- "$1" "$f" > "$f.swarm-tmp"; mv -f -- "$f.swarm-tmp" "$f"')
    return sh(script, marker, mutates=True, label="models-revoke")


def write_secret_file(path: str) -> Command:
    """stdin -> a 0600 file (the copy's private key or known_hosts), its directory 0700."""
    return sh('umask 077 && mkdir -p -- "$(dirname -- "$1")" && cat > "$1"', path, mutates=True,
              label="models-key-file")


# AES-GCM first: CPUs with AES instructions encrypt it faster than OpenSSH's default
# chacha20-poly1305 (the copy is CPU-bound on the two ends' ciphers; bench/model_copy.py).
DIRECT_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"


def send_direct(directory: str, names: Sequence[str], key: str, known_hosts: str, user: str, address: str,
                port: int) -> Command:
    """Stream the named files to another node over its own SSH (the key's forced command receives)."""
    script = ('d=$1 k=$2 kh=$3 dest=$4 p=$5; shift 5; cd -- "$d" && tar -cf - -- "$@" | '
              'ssh -F /dev/null -i "$k" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes '
              '-o UserKnownHostsFile="$kh" -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10 '
              f'-o Ciphers={DIRECT_CIPHERS} -p "$p" "$dest" receive')
    return sh(script, directory, key, known_hosts, f"{user}@{address}", str(port), *names, mutates=True,
              label="models-send-direct")


def remove_files(paths: Sequence[str]) -> Command:
    return sh('rm -f -- "$@"', *paths, mutates=True, label="models-forget-key")
