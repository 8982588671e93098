"""Releases on a node: unpack, list, carry env files over, prune."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence

from orchestrator.commands.base import Command, mutating, sh

TMP_PREFIX = ".tmp-"
STORE_SUFFIX = ".store"

_EXTRACT = (
    'root=$1 tmp=$2 rel=$3; umask 077 && mkdir -p -- "$root/releases" "$root/configs" && '
    'cd -- "$root/releases" && tar -x -p --no-same-owner -f - && '
    'if [ -d "$tmp.store" ]; then for d in "$tmp.store"/*/*; do [ -d "$d" ] || continue; '
    's=$(basename -- "$(dirname -- "$d")"); g=$(basename -- "$d"); mkdir -p -- "$root/configs/$s" && '
    '{ [ -e "$root/configs/$s/$g" ] || mv -T -- "$d" "$root/configs/$s/$g"; } || exit 1; done; '
    'rm -rf -- "$tmp.store"; fi && mv -T -- "$tmp" "$rel"'
)


def extract_release(deploy_root: str, release_id: str) -> Command:
    """Unpack the release tar (stdin) under releases/, then move it into place whole.

    The tar carries `.tmp-<id>/...` (env files already 0600 in the archive, kept with -p)
    and `.tmp-<id>.store/<service>/<digest>/...`, the config-store directories. Each store
    directory is renamed into `configs/` only when it is complete and absent there, and the
    release directory last: a failed upload (a full disk, a dropped link) leaves only
    `.tmp-*` behind, never a half-written release or config.
    """
    _check_id(release_id)
    return sh(_EXTRACT, deploy_root, f"{TMP_PREFIX}{release_id}", release_id, mutates=True,
              label="extract-release")


def remove_stale_tmp(deploy_root: str) -> Command:
    """Remove what failed uploads left (`releases/.tmp-*`); run under the lock."""
    return sh(f'rm -rf -- "$1/releases/{TMP_PREFIX}"*', deploy_root, mutates=True,
              label="remove-stale-tmp")


def remove_release(deploy_root: str, release_id: str) -> Command:
    """Remove one release and anything its upload left (an undone deploy)."""
    _check_id(release_id)
    script = 'rm -rf -- "$1/releases/$2" "$1/releases/.tmp-$2" "$1/releases/.tmp-$2.store"'
    return sh(script, deploy_root, release_id, mutates=True, label="remove-release")


def remove_current(deploy_root: str) -> Command:
    """Undo a first deploy's switch: no `current` at all, as before."""
    return sh('rm -f -- "$1/current"', deploy_root, mutates=True, label="remove-current")


def _check_id(release_id: str) -> None:
    if not release_id or "/" in release_id or release_id.startswith(".") or "\0" in release_id:
        raise ValueError(f"not a release id: {release_id!r}")


def list_releases(deploy_root: str) -> Command:
    return sh('ls -1 -- "$1/releases" 2>/dev/null || true', deploy_root, mutates=False, label="list-releases")






def infra_ready(deploy_root: str, network: str | None, directories: Sequence[str] = ("releases",)) -> Command:
    """Prints `ready` when every deploy dir (and the fleet network, when given) exists."""
    script = (
        'root=$1; net=$2; shift 2; for d; do [ -d "$root/$d" ] || { echo missing; exit 0; }; done; '
        'if [ -n "$net" ] && ! docker network inspect -- "$net" >/dev/null 2>&1; then echo missing; exit 0; fi; '
        'echo ready'
    )
    return sh(script, deploy_root, network or "", *directories, mutates=False, label="infra-ready")


def release_manifests(deploy_root: str) -> Command:
    """`current` target, then every release's release.json, one per line (compacted)."""
    script = (
        'readlink -- "$1/current" || echo; '
        'for d in "$1"/releases/*/; do [ -f "$d/release.json" ] && tr -d "\\n" < "$d/release.json" && echo; done; true'
    )
    return sh(script, deploy_root, mutates=False, label="release-manifests")


def copy_release(deploy_root: str, source: str, release_id: str) -> Command:
    """Start a release as a copy of another (a rollback release), in its temp dir."""
    _check_id(source)
    _check_id(release_id)
    script = ('umask 077 && cd -- "$1/releases" && rm -rf -- ".tmp-$3" && '
              'cp -a -- "$2" ".tmp-$3" && rm -f -- ".tmp-$3/release.json" ".tmp-$3/applied.txt"')
    return sh(script, deploy_root, source, release_id, mutates=True, label="copy-release")


def take_services(deploy_root: str, source: str, release_id: str, services: Sequence[str]) -> Command:
    """In a rollback release being built: these services' env files and config copies as in `source`."""
    script = ('root=$1 src=$2 id=$3; shift 3; cd -- "$root/releases" || exit 1; for s; do '
              'rm -rf -- ".tmp-$id/config/$s" ".tmp-$id/env/$s.env"; '
              '[ -d "$src/config/$s" ] && { mkdir -p -- ".tmp-$id/config" && cp -a -- "$src/config/$s" ".tmp-$id/config/$s" || exit 1; }; '
              '[ -f "$src/env/$s.env" ] && { mkdir -p -- ".tmp-$id/env" && cp -p -- "$src/env/$s.env" ".tmp-$id/env/$s.env" || exit 1; }; '
              'done; true')
    return sh(script, deploy_root, source, release_id, *services, mutates=True, label="take-services")


def carry_env_files(current: str, release: str) -> Command:
    """Copy env files the new release lacks (other phases' services) from the current one, 0600 kept."""
    script = (
        'umask 077; mkdir -p -- "$2/env"; for f in "$1"/env/*.env; do [ -f "$f" ] || continue; '
        'n="$2/env/$(basename -- "$f")"; [ -e "$n" ] || cp -p -- "$f" "$n"; done; true'
    )
    return sh(script, current, release, mutates=True, label="carry-env-files")


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
