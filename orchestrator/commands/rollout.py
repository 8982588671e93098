"""Commands of a rollout other than `compose up`: a service's live config and run directory,
a reload signal, the images of instances about to be swapped (engine/rollout.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from orchestrator.commands.base import Command, sh

LIVE = "live"

_INSTALL_LIVE = (
    'umask 022; root=$1 s=$2 g=$3; src="$root/configs/$s/$g" live="$root/configs/$s/live"; '
    '[ -d "$src" ] || { echo "config $g of $s is not on the node" >&2; exit 1; }; '
    'mkdir -p -- "$live" || exit 1; '
    'for f in "$src"/* "$src"/.[!.]*; do [ -f "$f" ] || continue; b=${f##*/}; '
    'cp -p -- "$f" "$live/.$b.swarm-new" && mv -f -- "$live/.$b.swarm-new" "$live/$b" || exit 1; done; '
    'for f in "$live"/* "$live"/.[!.]*; do [ -f "$f" ] || continue; b=${f##*/}; '
    '[ "$b" = .digest ] || [ -e "$src/$b" ] || rm -f -- "$f"; done; '
    'printf "%s\\n" "$g" > "$live/.digest.swarm-new" && mv -f -- "$live/.digest.swarm-new" "$live/.digest"'
)

_RUN_DIR = (
    'root=$1 s=$2; mkdir -p -- "$root/run" && chmod 700 -- "$root/run" && '
    'mkdir -p -- "$root/run/$s" && chmod 777 -- "$root/run/$s"'
)

_SIGNAL = (
    'ids=$(docker ps -q --filter "label=com.docker.compose.project=$1" '
    '--filter "label=com.docker.compose.service=$2") || exit 1; '
    '[ -n "$ids" ] || { echo "$2 is not running" >&2; exit 1; }; docker kill -s "$3" $ids >/dev/null'
)


def install_live_config(deploy_root: str, service: str, digest: str) -> Command:
    """Make `configs/<service>/live/` (bind-mounted into the container) hold the files of
    config `digest`: each written beside and renamed over its old copy, files the new config
    does not have removed, the digest noted in `.digest`. A reloadable service mounts this
    directory, so a reload reads the new files in place."""
    _check(service, digest)
    return sh(_INSTALL_LIVE, deploy_root, service, digest, mutates=True, label="install-live-config")


def run_dir(deploy_root: str, service: str) -> Command:
    """`<deploy_root>/run/<service>`, where the service opens its control socket: the service's
    (unprivileged) user must create files in it, and `run/` (0700) keeps anyone but swarm's
    user from reaching what is inside."""
    _check(service)
    return sh(_RUN_DIR, deploy_root, service, mutates=True, label="run-dir")


def signal_service(project: str, service: str, signal: str) -> Command:
    """Send `signal` to the service's running container (a config reload)."""
    _check(service)
    if not re.fullmatch(r"SIG[A-Z0-9]{2,8}", signal):
        raise ValueError(f"not a signal name: {signal!r}")
    return sh(_SIGNAL, project, service, signal, mutates=True, label="signal-service")


def compose_pull(project: str, file: str, services: Sequence[str]) -> Command:
    """The images of services about to be swapped one by one, pulled with the upload: a swap
    then stops an instance only for as long as its new container takes to start."""
    for name in services:
        _check(name)
    return Command(("docker", "compose", "-p", project, "-f", file, "pull", "--quiet", "--", *services),
                   mutates=True)


def _check(*names: str) -> None:
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name) or name == LIVE:
            raise ValueError(f"not a service name or config digest: {name!r}")
