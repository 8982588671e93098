"""What a node runs, read in a run's first command on it: the look.

`look_commands(request)` are the reads: the current release, the release list, the
containers, whether the infrastructure is in place and — for a rollback — every release's
record. The run's session (engine/session.py) puts the lock step before them and its
lock-guarded steps after, so the whole look stays ONE command per node; `parse_look`
turns the reads' answers into a frozen `NodeState`, and the plan is made from that, and
only that. A lock's holder record (`holder_record`, `describe_holder`, `is_stale`) is read
here too: who holds a lock is a fact about the node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestrator import commands as cmd
from orchestrator.commands import Command, StepResult
from orchestrator.errors import RuntimeFailure
from orchestrator.facts.containers import label, parse_containers

RELEASE_FILE = "release.json"


@dataclass(frozen=True)
class LookRequest:
    """What a run wants to know of one node (and wants it to run)."""

    deploy_root: str
    expected: tuple[str, ...] = ()          # `service hash` lines the node should run
    directories: tuple[str, ...] = ()       # deploy dirs an infrastructure phase makes
    network: str | None = None              # the fleet network, when a phase creates it
    docker: bool = True                     # False: an SSH-only node (plain directories)
    manifests: bool = False                 # every release's release.json (rollback)
    reads: bool = True                      # False: no reads at all (the lock, and what the run adds)

    def wanted_dirs(self) -> list[str]:
        """Directories under the deploy root the node must have for the run to be a no-op."""
        return list(dict.fromkeys(["releases", *self.directories]))


@dataclass(frozen=True)
class LockState:
    """The lock as the look left it."""

    taken: bool = False                     # this run holds it now
    held_by: dict[str, Any] | None = None   # someone else's holder record
    error: str | None = None                # could not even try (permissions, ...)

    @property
    def is_held_elsewhere(self) -> bool:
        return self.held_by is not None and not self.taken


@dataclass(frozen=True)
class NodeState:
    """What the look found on a node."""

    node: str
    current: dict[str, Any] | None = None
    releases: tuple[str, ...] = ()
    containers: tuple[dict[str, Any], ...] = ()
    lock: LockState = LockState()
    infra_ready: bool = True
    manifests: tuple[dict[str, Any], ...] = ()
    docker_error: str | None = None

    @property
    def current_id(self) -> str | None:
        return str(self.current["id"]) if self.current and "id" in self.current else None

    @property
    def applied(self) -> dict[str, str]:
        return dict(self.current.get("applied", {})) if self.current else {}

    def container_of(self, service: str, project: str | None = None) -> dict[str, Any] | None:
        for c in self.containers:
            if label(c, "com.docker.compose.service") != service:
                continue
            if project is None or label(c, "com.docker.compose.project") == project:
                return c
        return None

    def is_running(self, service: str, project: str) -> bool:
        container = self.container_of(service, project)
        return container is not None and str(container.get("State", "")) == "running"

    def manifest(self, release_id: str) -> dict[str, Any] | None:
        return next((m for m in self.manifests if m.get("id") == release_id), None)

    def after(self, release: dict[str, Any]) -> NodeState:
        """The state once this run switched the node to `release` (its own record)."""
        rid = str(release["id"])
        releases = tuple(sorted({*self.releases, rid}))
        return replace(self, current=release, releases=releases,
                       manifests=(*self.manifests, release) if self.manifests else ())


# --------------------------------------------------------------------------- the reads


def look_commands(request: LookRequest) -> list[Command]:
    """The look's reads (see the module docstring), in the order `parse_look` splits them."""
    root = request.deploy_root
    steps: list[Command] = [cmd.read_file(f"{root}/current/{RELEASE_FILE}"), cmd.list_releases(root)]
    if request.docker:  # the fleet network is read with the containers (one docker process)
        steps.append(cmd.docker_ps_all(request.network))
    if request.directories or request.network:
        steps.append(cmd.infra_ready(root, None if request.docker else request.network, request.wanted_dirs()))
    if request.manifests:
        steps.append(cmd.release_manifests(root))
    return steps


def parse_look(request: LookRequest, steps: Sequence[StepResult], node: str) -> NodeState:
    """Split the reads' answers into a `NodeState` (its lock is the session's to fill in); a
    node that could not answer raises."""
    if len(steps) < 2 or steps[0].exit_status is None:
        raise RuntimeFailure(f"{node}: could not read the node's state")
    rest = list(steps[2:])
    docker = rest.pop(0) if request.docker and rest else None
    infra = rest.pop(0) if (request.directories or request.network) and rest else None
    manifests = rest.pop(0) if request.manifests and rest else None
    containers, docker_error = _containers(docker)
    network_ready = (request.network is None or not request.docker
                     or _network_seen(docker))
    return NodeState(
        node=node,
        current=parse_release_json(cmd.parse_read_file(steps[0].stdout)),
        releases=parse_releases(steps[1].stdout),
        containers=containers,
        infra_ready=(infra is None or infra.stdout.strip() == "ready") and network_ready,
        manifests=parse_manifests(manifests.stdout) if manifests is not None else (),
        docker_error=docker_error,
    )


def _network_seen(step: StepResult | None) -> bool:
    """The network exists: the docker step found a container attached to it (and so printed no
    verdict), or `docker network inspect` found it (commands/docker.py `docker_ps_all`)."""
    if step is None or not step.ok:
        return False
    said = [line.strip() for line in step.stdout.splitlines() if line.startswith("swarm:network ")]
    return not said or said[-1] == cmd.NETWORK_PRESENT


def _containers(step: StepResult | None) -> tuple[tuple[dict[str, Any], ...], str | None]:
    if step is None:
        return (), None
    if not step.ok:
        return (), (step.stderr.strip() or step.stdout.strip())[:200] or f"exit {step.exit_status}"
    return parse_containers(step.stdout), None


def holder_record(text: str) -> dict[str, Any]:
    """A lock's holder file: JSON, or (an old or foreign lock) its raw text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"by": text.strip()[:200] or "unknown holder"}
    return data if isinstance(data, dict) else {"by": str(data)[:200]}


def describe_holder(holder: dict[str, Any]) -> str:
    action = holder.get("action", "deploy")
    phases = holder.get("phases", holder.get("phase", "?"))
    if isinstance(phases, list):
        phases = ", ".join(map(str, phases)) or "?"
    where = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return (f"{holder.get('by', '?')} ({action} of phase {phases}, {where}, "
            f"since {holder.get('since', '?')})")


def is_stale(holder: dict[str, Any], this_host: str) -> bool:
    """A holder on this controller whose process is gone: nobody will release that lock."""
    pid = holder.get("pid")
    if holder.get("host") != this_host or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def parse_release_json(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"id": "unknown", "applied": {}, "corrupt": True}
    return data if isinstance(data, dict) else None


def parse_releases(stdout: str) -> tuple[str, ...]:
    return tuple(sorted(r for r in stdout.split() if r and not r.startswith(".")))


def parse_manifests(stdout: str) -> tuple[dict[str, Any], ...]:
    """`release_manifests`: the current target, then one compacted release.json per line."""
    out = []
    for line in stdout.splitlines()[1:]:
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "id" in data:
            out.append(data)
    return tuple(sorted(out, key=lambda d: str(d["id"])))
