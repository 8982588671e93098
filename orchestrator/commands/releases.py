"""Releases on a node: unpack, list, carry env files over, prune."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence

from orchestrator.commands.base import Command, mutating, sh


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
    return sh(script, deploy_root, tmp_dir, release_dir, mutates=True)


def list_releases(deploy_root: str) -> Command:
    return sh('ls -1 -- "$1/releases" 2>/dev/null || true', deploy_root, mutates=False)






def infra_ready(deploy_root: str, network: str | None, directories: Sequence[str] = ("releases",)) -> Command:
    """Prints `ready` when every deploy dir (and the fleet network, when given) exists."""
    script = (
        'root=$1; net=$2; shift 2; for d; do [ -d "$root/$d" ] || { echo missing; exit 0; }; done; '
        'if [ -n "$net" ] && ! docker network inspect -- "$net" >/dev/null 2>&1; then echo missing; exit 0; fi; '
        'echo ready'
    )
    return sh(script, deploy_root, network or "", *directories, mutates=False)


def release_manifests(deploy_root: str) -> Command:
    """`current` target, then every release's release.json, one per line (compacted)."""
    script = (
        'readlink -- "$1/current" || echo; '
        'for d in "$1"/releases/*/; do [ -f "$d/release.json" ] && tr -d "\\n" < "$d/release.json" && echo; done; true'
    )
    return sh(script, deploy_root, mutates=False)


def carry_env_files(current: str, release: str) -> Command:
    """Copy env files the new release lacks (other phases' services) from the current one, 0600 kept."""
    script = (
        'umask 077; mkdir -p -- "$2/env"; for f in "$1"/env/*.env; do [ -f "$f" ] || continue; '
        'n="$2/env/$(basename -- "$f")"; [ -e "$n" ] || cp -p -- "$f" "$n"; done; true'
    )
    return sh(script, current, release, mutates=True)


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
