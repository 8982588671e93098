"""Node facts for preflight: everything read from one node in ONE remote command.

`probe_script(request)` batches every read-only question preflight asks a node — its
architecture, docker/compose versions, the engine's runtimes and data root, free disk,
listening ports, containers, the current release, nvidia-smi, TCP connects to the
ports of the other nodes it depends on, and the id of each stateful service's newest
backup — into one `Script` (one SSH round trip per node).
`parse_facts` splits the answer back into a frozen `NodeFacts`; every field is
None (with the command's error kept) when that part could not be read, so the checks
can say exactly what failed instead of the first exception winning.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator import commands as cmd
from orchestrator.commands import Command, DiskFree, Script, StepResult
from orchestrator.commands import backup as backup_cmd
from orchestrator.errors import RuntimeFailure
from orchestrator.facts.containers import parse_containers
from orchestrator.facts.gpu import (
    NVIDIA_SMI_QUERY,
    NVIDIA_SMI_TABLE,
    GpuReading,
    cuda_of_driver,
    parse_cuda_version,
    parse_nvidia_smi,
)
from orchestrator.facts.node import parse_release_json

# Free disk at a path, or at its nearest parent that exists and the user may stat (before
# phase 1 made the deploy root; a docker root under a 0700 directory).
_DF_NEAREST = (
    'd=$1; while [ ! -e "$d" ] || ! df -Pk -- "$d" >/dev/null 2>&1; do '
    '[ "$d" = / ] && break; d=$(dirname -- "$d"); done; df -Pk -- "$d"'
)
_DOCKER_ROOT_DF = (
    "r=$(docker info --format '{{.DockerRootDir}}') && [ -n \"$r\" ] && set -- \"$r\" && "
    + _DF_NEAREST
)
# TCP connect to each HOST:PORT argument, all at once, 3 s each; one line per target:
# `HOST:PORT open` or `HOST:PORT closed RC ERROR TEXT`.
_TCP_PROBES = (
    'for t; do ( h=${t%:*}; h=${h#"["}; h=${h%"]"}; p=${t##*:}; '
    "if e=$(timeout 3 bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' \"$h\" \"$p\" 2>&1); "
    'then echo "$t open"; else rc=$?; echo "$t closed $rc $(printf %s "$e" | tr "\\n" " ")"; fi '
    ") & done; wait"
)
PROBE_TIMEOUT_RC = 124

_STEPS_FIXED = (
    "uname",
    "docker_version",
    "compose_version",
    "docker_info",
    "df_deploy_root",
    "df_docker_root",
    "ports",
    "containers",
    "current",
)


# Pull (no time limit: a first pull of a big image is slow), then run the version command
# under a time limit; a server that ignores it is removed when the limit hits.
_SMOKE_RUN = (
    't=$1 p=$2 e=$3 i=$4 n=$5; shift 5; docker pull -q --platform "$p" "$i" >/dev/null || exit; '
    'timeout "$t" docker run --rm --name "$n" --platform "$p" --entrypoint "$e" "$i" "$@"; rc=$?; '
    'if [ "$rc" -eq 124 ]; then docker rm -f "$n" >/dev/null 2>&1; fi; exit "$rc"'
)
SMOKE_RUN_TIMEOUT_S = 30


@dataclass(frozen=True)
class Smoke:
    """`docker run --rm --platform P IMAGE <version command>` for one image (--smoke)."""

    image: str
    platform: str
    command: tuple[str, ...]

    def to_command(self) -> Command:
        entry, *args = self.command
        name = f"swarm-smoke-{secrets.token_hex(4)}"
        data = (str(SMOKE_RUN_TIMEOUT_S), self.platform, entry, self.image, name, *args)
        return Command(("sh", "-c", _SMOKE_RUN, "sh", *data), mutates=True)


@dataclass(frozen=True)
class FactsRequest:
    """What to ask one node: its deploy root, GPUs or not, TCP targets, smoke runs."""

    deploy_root: str
    gpus: bool = False
    targets: tuple[str, ...] = ()  # "address:port", "[v6 address]:port"
    smokes: tuple[Smoke, ...] = ()
    backups: tuple[str, ...] = ()  # stateful services: the newest backup of each (docs/backup.md)


@dataclass(frozen=True)
class Probe:
    """Result of one TCP connect made from the node."""

    target: str
    open: bool
    refused: bool
    detail: str
    untested: bool = False  # no bash/timeout on the node: nothing was tried


@dataclass(frozen=True)
class NodeFacts:
    """What preflight learned about one node; None where that part could not be read."""

    arch: str | None = None
    docker_client: str | None = None
    docker_server: str | None = None
    docker_error: str | None = None
    compose: str | None = None
    compose_error: str | None = None
    runtimes: tuple[str, ...] | None = None
    docker_root: str | None = None
    disk_deploy_root: DiskFree | None = None
    disk_docker_root: DiskFree | None = None
    listening: frozenset[int] | None = None
    containers: tuple[dict[str, Any], ...] = ()
    current: dict[str, Any] | None = None
    gpus: tuple[GpuReading, ...] | None = None
    gpu_error: str | None = None
    cuda_version: str | None = None   # the highest CUDA the driver supports (nvidia-smi's table)
    probes: dict[str, Probe] = field(default_factory=dict)
    probe_error: str | None = None
    smokes: dict[str, StepResult] = field(default_factory=dict)
    backups: dict[str, str | None] | None = None   # service -> its newest backup id; None: unread
    backup_clock: float | None = None              # the node's clock when it looked
    backup_error: str | None = None

    @property
    def applied(self) -> dict[str, str]:
        return dict(self.current.get("applied", {})) if self.current else {}


def probe_script(request: FactsRequest) -> Script:
    """The one command preflight runs on a node (read-only unless smoke runs are asked)."""
    steps: list[Command] = [
        cmd.uname_m(),
        cmd.docker_version(),
        cmd.read_only("docker", "compose", "version", "--short"),
        cmd.read_only("docker", "info", "--format", "{{json .}}"),
        cmd.read_only("sh", "-c", _DF_NEAREST, "sh", request.deploy_root),
        cmd.read_only("sh", "-c", _DOCKER_ROOT_DF),
        cmd.listening_ports(),
        cmd.docker_ps_all(),
        cmd.read_file(f"{request.deploy_root}/current/release.json"),
    ]
    if request.gpus:
        steps.append(Command(NVIDIA_SMI_QUERY, mutates=False))
        steps.append(Command(NVIDIA_SMI_TABLE, mutates=False))
    if request.targets:
        steps.append(cmd.read_only("sh", "-c", _TCP_PROBES, "sh", *request.targets))
    if request.backups:
        steps.append(backup_cmd.newest_backups(request.deploy_root, request.backups))
    steps.extend(s.to_command() for s in request.smokes)
    return Script.of(*steps, stop_on_error=False)


def parse_facts(request: FactsRequest, steps: Sequence[StepResult], node: str) -> NodeFacts:
    """Split a `probe_script` answer back into `NodeFacts`."""
    if len(steps) < len(_STEPS_FIXED) or steps[0].exit_status is None:
        raise RuntimeFailure(f"{node}: preflight could not read the node's facts")
    by = dict(zip(_STEPS_FIXED, steps, strict=False))
    rest = list(steps[len(_STEPS_FIXED) :])
    gpu_step = rest.pop(0) if request.gpus else None
    table_step = rest.pop(0) if request.gpus else None
    probe_step = rest.pop(0) if request.targets else None
    backup_step = rest.pop(0) if request.backups else None
    client, server, docker_error = _docker_versions(by["docker_version"])
    info = _json_object(by["docker_info"].stdout) if by["docker_info"].ok else {}
    gpus, gpu_error = _gpus(gpu_step)
    probes, probe_error = _probes(probe_step)
    backups, clock, backup_error = _backups(backup_step)
    return NodeFacts(
        arch=by["uname"].stdout.strip() or None if by["uname"].ok else None,
        docker_client=client,
        docker_server=server or _str(info.get("ServerVersion")),
        docker_error=docker_error,
        compose=_compose_version(by["compose_version"]),
        compose_error=None if by["compose_version"].ok else _err(by["compose_version"]),
        runtimes=tuple(sorted(info["Runtimes"])) if isinstance(info.get("Runtimes"), dict) else None,
        docker_root=_str(info.get("DockerRootDir")),
        disk_deploy_root=_disk(by["df_deploy_root"]),
        disk_docker_root=_disk(by["df_docker_root"]),
        listening=frozenset(cmd.parse_listening_ports(by["ports"].stdout))
        if by["ports"].ok
        else None,
        containers=parse_containers(by["containers"].stdout) if by["containers"].ok else (),
        current=_current(by["current"], node),
        gpus=gpus,
        gpu_error=gpu_error,
        cuda_version=_cuda(table_step, gpus),
        probes=probes,
        probe_error=probe_error,
        smokes={s.image: r for s, r in zip(request.smokes, rest, strict=False)},
        backups=backups,
        backup_clock=clock,
        backup_error=backup_error,
    )


# --- parsers -----------------------------------------------------------------------------


def _err(step: StepResult) -> str:
    text = (step.stderr.strip() or step.stdout.strip()).splitlines()
    detail = text[-1] if text else ""
    status = "never finished" if step.exit_status is None else f"exit {step.exit_status}"
    return f"{detail} ({status})" if detail else status


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text.strip() or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _docker_versions(step: StepResult) -> tuple[str | None, str | None, str | None]:
    """`docker version --format '{{json .}}'`: client version, server version, error.

    Without access to the engine the client still prints its half (exit 1)."""
    data = _json_object(step.stdout)
    client = data.get("Client") if isinstance(data.get("Client"), dict) else {}
    server = data.get("Server") if isinstance(data.get("Server"), dict) else {}
    error = None if step.ok and server else _err(step)
    return _str((client or {}).get("Version")), _str((server or {}).get("Version")), error


_VERSION_RE = re.compile(r"v?(\d+(?:\.\d+)+)")


def _compose_version(step: StepResult) -> str | None:
    match = _VERSION_RE.search(step.stdout) if step.ok else None
    return match.group(1) if match else None


def _disk(step: StepResult) -> DiskFree | None:
    if not step.ok:
        return None
    try:
        return cmd.parse_df(step.stdout)
    except (IndexError, ValueError):
        return None


def _current(step: StepResult, node: str) -> dict[str, Any] | None:
    if not step.ok:
        return None
    try:
        return parse_release_json(cmd.parse_read_file(step.stdout))
    except (ValueError, RuntimeFailure):
        return None


def _gpus(step: StepResult | None) -> tuple[tuple[GpuReading, ...] | None, str | None]:
    if step is None:
        return None, None
    if not step.ok:
        if step.exit_status == 127:
            return None, "nvidia-smi not found"
        return None, _err(step)
    try:
        return parse_nvidia_smi(step.stdout), None
    except RuntimeFailure as exc:
        return None, exc.message


def _cuda(step: StepResult | None, gpus: tuple[GpuReading, ...] | None) -> str | None:
    """The driver's CUDA from its table's header, else from its version (NVIDIA's table)."""
    found = parse_cuda_version(step.stdout) if step is not None and step.ok else None
    driver = next((g.driver_version for g in gpus or () if g.driver_version), None)
    return found or (cuda_of_driver(driver) if driver else None)


def _probes(step: StepResult | None) -> tuple[dict[str, Probe], str | None]:
    if step is None:
        return {}, None
    probes = {p.target: p for p in map(parse_probe_line, step.stdout.splitlines()) if p}
    if not probes and not step.ok:
        return {}, _err(step)
    return probes, None


def _backups(step: StepResult | None) -> tuple[dict[str, str | None] | None, float | None, str | None]:
    """`newest_backups`: `now EPOCH`, then `service id` or `service -` per service."""
    if step is None:
        return None, None, None
    if not step.ok:
        return None, None, _err(step)
    found: dict[str, str | None] = {}
    clock: float | None = None
    for line in step.stdout.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "now" and value.isdigit():
            clock = float(value)
        elif key:
            found[key] = value if backup_cmd.BACKUP_ID.fullmatch(value) else None
    return found, clock, None


def parse_probe_line(line: str) -> Probe | None:
    """`H:P open` / `H:P closed RC TEXT` -> Probe; None for anything else."""
    parts = line.strip().split(" ", 3)
    if len(parts) < 2 or ":" not in parts[0]:
        return None
    if parts[1] == "open":
        return Probe(parts[0], True, False, "open")
    if parts[1] != "closed":
        return None
    rc = parts[2] if len(parts) > 2 else "?"
    text = parts[3].strip() if len(parts) > 3 else ""
    refused = "refused" in text.lower()
    if rc == str(PROBE_TIMEOUT_RC):
        text = "no answer within 3 s"
    elif "Invalid argument" in text:  # what connect() says for a blackhole route
        text = "no route to host (blackholed)"
    elif "not found" in text or rc == "127":
        return Probe(parts[0], False, False, "bash or timeout missing on the node", untested=True)
    return Probe(parts[0], False, refused, _short(text) or f"exit {rc}")


def _short(text: str) -> str:
    """`bash: line 1: /dev/tcp/h/p: No route to host` -> `No route to host`."""
    last = text.strip().rsplit(": ", 1)[-1]
    return last.strip()
