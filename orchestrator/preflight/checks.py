"""The preflight checks: pure functions from facts to `CheckResult`s.

Each check looks at one subject on one node — the SSH login, the docker engine, an image
for the node's platform, a GPU, a published port, a protected service, a secret, a
dependency on another node — and says pass, warn or fail, with a message naming what
it saw and a hint saying what to do. Nothing here touches the network: the runner
(`orchestrator.preflight.run`) gathers `NodeFacts`, registry answers, Vault answers and
HTTP probe outcomes, and hands them to these functions, so every rule is unit-tested
with plain data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.addresses import host_port
from orchestrator.clients.images import arch_from_uname, parse_platform
from orchestrator.clients.registry import ImageIndex, format_platforms
from orchestrator.commands import StepResult
from orchestrator.config.inventory import Node
from orchestrator.errors import SwarmError
from orchestrator.facts import gpu as gpu_mod
from orchestrator.facts.containers import label as container_label
from orchestrator.facts.containers import published_ports
from orchestrator.facts.probes import Outcome
from orchestrator.preflight.facts import SMOKE_RUN_TIMEOUT_S, NodeFacts
from orchestrator.preflight.report import CheckResult, Status
from orchestrator.render.backups import id_time, show_span
from orchestrator.render.services import Service


def result(
    check: str, subject: str, node: str | None, status: Status, message: str,
    hint: str | None = None,
) -> CheckResult:
    return CheckResult(check, subject, node, status, message, hint)


# --- versions ------------------------------------------------------------------------------

_NUMBERS_RE = re.compile(r"\d+(?:\.\d+)*")


def version_tuple(text: str) -> tuple[int, ...]:
    """`24.0.5`, `v2.20.2`, `20.10.24+dfsg1` -> (24, 0, 5) ...; () when there is no number."""
    match = _NUMBERS_RE.search(text)
    return tuple(int(p) for p in match.group().split(".")) if match else ()


def is_version_at_least(actual: str, minimum: str) -> bool:
    have, want = version_tuple(actual), version_tuple(minimum)
    width = max(len(have), len(want))
    return bool(have) and have + (0,) * (width - len(have)) >= want + (0,) * (width - len(want))


# --- reachability and access -----------------------------------------------------------------


def check_ssh(node: Node, error: str | None) -> CheckResult:
    target = f"{node.ssh.user}@{host_port(node.address, node.ssh.port)}"
    if error is None:
        return result("ssh", "login", node.name, "pass", f"logged in as {target}")
    return result(
        "ssh", "login", node.name, "fail", f"cannot log in as {target}: {error}",
        hint="check the node is up, the address and ssh block in the inventory, and that "
        "its host key is trusted (`swarm trust " + node.name + "`)",
    )


def check_off(node: Node, why: str) -> CheckResult:
    """An optional node that did not answer within its connect window: named, not waited for."""
    return result("ssh", "login", node.name, "warn", f"optional node off, its checks skipped: {why}",
                  hint=f"fine while {node.name} is meant to be off; `swarm preflight --limit {node.name}` "
                       "checks it once it is up")


def check_docker(node: Node, facts: NodeFacts, minimum: str) -> list[CheckResult]:
    server = facts.docker_server
    if server is None:
        why = facts.docker_error or "no answer from the engine"
        return [result(
            "docker", "engine", node.name, "fail",
            f"{node.ssh.user} cannot use the docker engine: {why}",
            hint=f"start dockerd, and add {node.ssh.user} to the docker group (then log in again)",
        )]
    if not is_version_at_least(server, minimum):
        return [result(
            "docker", "engine", node.name, "fail",
            f"docker engine {server} is older than the minimum {minimum}",
            hint="upgrade Docker Engine on the node, or lower min_docker in the inventory",
        )]
    return [result("docker", "engine", node.name, "pass", f"docker engine {server} >= {minimum}")]


def check_compose(node: Node, facts: NodeFacts, minimum: str) -> CheckResult:
    if facts.compose is None:
        return result(
            "compose", "docker compose", node.name, "fail",
            f"docker compose v2 is not available: {facts.compose_error or 'no version printed'}",
            hint="install the compose v2 plugin (docker-compose-plugin) on the node",
        )
    if not is_version_at_least(facts.compose, minimum):
        return result(
            "compose", "docker compose", node.name, "fail",
            f"docker compose {facts.compose} is older than the minimum {minimum}",
            hint="upgrade the compose plugin, or lower min_compose in the inventory",
        )
    return result("compose", "docker compose", node.name, "pass",
                  f"docker compose {facts.compose} >= {minimum}")


def check_disk(node: Node, facts: NodeFacts, needed_gb: float) -> list[CheckResult]:
    places = (
        (f"deploy_root {node.deploy_root}", facts.disk_deploy_root),
        (f"docker data root {facts.docker_root or '?'}", facts.disk_docker_root),
    )
    return [_disk_result(node, subject, free, needed_gb) for subject, free in places]


DISK_FLOOR_GB = 2.0  # below this not even the images pull


def _disk_result(node: Node, subject: str, free: Any, needed_gb: float) -> CheckResult:
    """Fail under the floor; warn when below what the roles declare (data grows into it)."""
    if free is None:
        return result("disk", subject, node.name, "warn", f"could not read free space of {subject}")
    free_gb = free.available_kib / 1024 / 1024
    where = f"{free_gb:.1f} GB free on {free.mount}"
    hint = "free space (`docker system prune`, old releases) or move the data root"
    if free_gb < DISK_FLOOR_GB:
        return result("disk", subject, node.name, "fail",
                      f"only {where}: images and releases will not fit", hint=hint)
    if free_gb < needed_gb:
        return result("disk", subject, node.name, "warn",
                      f"{where}, less than the {needed_gb:g} GB the new services' roles declare",
                      hint=hint)
    return result("disk", subject, node.name, "pass", f"{where} (new services declare {needed_gb:g} GB)")


# --- architecture and images -----------------------------------------------------------------


def check_arch(node: Node, facts: NodeFacts) -> CheckResult:
    machine = facts.arch
    if machine is None:
        return result("arch", "uname -m", node.name, "fail", "`uname -m` gave no answer")
    actual = arch_from_uname(machine)
    if actual == node.arch:
        return result("arch", "uname -m", node.name, "pass", f"{machine} is {node.arch}, as inventoried")
    return result(
        "arch", "uname -m", node.name, "fail",
        f"the node reports {machine} ({actual or 'unknown'}), the inventory says {node.arch}",
        hint=f"fix nodes.{node.name}.arch in the inventory: every image is chosen by it",
    )


def check_image(
    node: str, image: str, platform: str, answer: ImageIndex | SwarmError, services: Sequence[str],
) -> CheckResult:
    """Does the registry offer `image` for `platform`? The digest pinned goes in the message."""
    used_by = ", ".join(services)
    if isinstance(answer, SwarmError):
        return result("image", image, node, "fail",
                      f"cannot read {image} from its registry ({used_by}): {answer.message}",
                      hint=answer.hint)
    wanted = parse_platform(platform)
    manifest = answer.find(wanted)
    if manifest is None:
        return result(
            "image", image, node, "fail",
            f"{image} has no {platform} variant (used by {used_by}); it offers "
            f"{format_platforms(answer.platforms)}",
            hint=f"pick an image or tag built for {platform} (role image.by_arch), or run the "
            "service on a node of an offered platform",
        )
    return result("image", image, node, "pass", f"{platform} offered; pinned as {answer.pinned}")


def check_smoke(node: str, image: str, platform: str, step: StepResult | None) -> CheckResult:
    if step is None:
        return result("smoke", image, node, "warn", "the smoke run did not report back")
    if step.ok:
        first = (step.stdout.strip().splitlines() or ["(no output)"])[0][:120]
        return result("smoke", image, node, "pass", f"runs on {platform}: {first}")
    lines = (step.stderr.strip() or step.stdout.strip()).splitlines() or [""]
    why = next((line for line in lines if "error" in line.lower()), lines[-1])
    if step.exit_status == 124:
        return result(
            "smoke", image, node, "warn",
            f"the version command was still running after {SMOKE_RUN_TIMEOUT_S} s on {platform} "
            "(the image starts, but did not answer and exit)",
            hint="set image.version_command in the role to a command that prints and exits",
        )
    return result(
        "smoke", image, node, "fail",
        f"`docker run --platform {platform}` failed (exit {step.exit_status}): {why[:200]}",
        hint="the image may not run on this CPU (exec format error) or the registry is unreachable",
    )


# --- GPUs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VramNeed:
    """What one vLLM instance will claim on a card, from the plan's start-up model (MiB).

    vLLM takes its whole share, gpu_memory_utilization x the card's CUDA total, whatever the
    model needs: `claim_mib`. `start_mib` is the least share at which one full-length sequence
    still fits beside weights and overheads, so a card partly used by something else can be
    told apart: lower the utilization, or free the card.
    """

    service: str
    gpu: int
    claim_mib: int
    start_mib: int
    total_mib: int
    running: bool = False


def check_gpus(
    node: Node, facts: NodeFacts, min_driver: str | None, needs: Sequence[VramNeed]
) -> list[CheckResult]:
    if not node.gpus:
        return []
    if facts.gpus is None:
        return [result(
            "gpu", "nvidia-smi", node.name, "fail",
            f"the inventory lists {len(node.gpus)} GPU(s) but nvidia-smi failed: {facts.gpu_error}",
            hint="install the NVIDIA driver (nvidia-smi must run as the ssh user), or fix gpus: "
            "in the inventory",
        )]
    out = [_finding("gpu", "nvidia-smi", node.name, gpu_mod.check_count(facts.gpus, len(node.gpus)))]
    out.append(check_runtime(node, facts))
    readings = {r.index: r for r in facts.gpus}
    for i, spec in enumerate(node.gpus):
        index = spec.index if spec.index is not None else i
        reading = readings.get(index)
        if reading is not None:
            mine = [n for n in needs if n.gpu == index]
            out.extend(_gpu_results(node, reading, spec.model, spec.vram_mib, min_driver, mine))
    return out


def _gpu_results(
    node: Node, reading: gpu_mod.GpuReading, model: str, vram_mib: int, min_driver: str | None,
    needs: Sequence[VramNeed],
) -> list[CheckResult]:
    subject = f"GPU {reading.index}"
    findings = [
        ("gpu-model", gpu_mod.check_model(reading, model)),
        ("gpu-vram", gpu_mod.check_vram(reading, vram_mib)),
        ("gpu-thermal", gpu_mod.check_thermal(reading, node.thermal_limit_c)),
    ]
    if min_driver:
        findings.append(("gpu-driver", gpu_mod.check_driver(reading, min_driver)))
    out = [_finding(check, subject, node.name, f) for check, f in findings]
    if needs:
        out.append(check_free_vram(node.name, reading, needs))
    return out


@dataclass(frozen=True)
class CudaNeed:
    """What CUDA an image needs (None: no requirement), and per driver CUDA that cannot run it, the
    newest tag of the image that would (None: none found)."""

    image: str
    needed: str | None
    fits: dict[str, str | None]


def check_cuda(node: Node, services: Sequence[Service], facts: NodeFacts,
               needs: Mapping[tuple[str, str], CudaNeed | SwarmError]) -> list[CheckResult]:
    """Each GPU image of the node against the CUDA its driver supports (before any container changes)."""
    out: list[CheckResult] = []
    driver = next((g.driver_version for g in facts.gpus or () if g.driver_version), None)
    for image in dict.fromkeys(s.image for s in services if s.gpu):
        need = needs.get((image, node.platform))
        if need is None:
            continue
        if isinstance(need, SwarmError):
            out.append(result("cuda", image, node.name, "warn", f"could not read {image}'s CUDA: {need.message}"))
            continue
        fit = need.fits.get(facts.cuda_version or "")
        out.append(_finding("cuda", image, node.name,
                            gpu_mod.check_cuda(image, need.needed, facts.cuda_version, driver, fit)))
    return out


def check_runtime(node: Node, facts: NodeFacts) -> CheckResult:
    runtimes = facts.runtimes
    if runtimes is None:
        return result("gpu-runtime", "docker runtimes", node.name, "warn",
                      "could not read the engine's runtimes (docker info)")
    if "nvidia" in runtimes:
        return result("gpu-runtime", "docker runtimes", node.name, "pass",
                      f"nvidia runtime known to docker ({', '.join(runtimes)})")
    return result(
        "gpu-runtime", "docker runtimes", node.name, "fail",
        f"docker knows no nvidia runtime (only {', '.join(runtimes) or 'none'}): GPU "
        "containers cannot start",
        hint="install nvidia-container-toolkit and run `nvidia-ctk runtime configure "
        "--runtime=docker`, then restart dockerd",
    )


def check_free_vram(node: str, reading: gpu_mod.GpuReading, needs: Sequence[VramNeed]) -> CheckResult:
    """Free VRAM now against the shares the phase's vLLM instances not yet running will claim."""
    subject = f"GPU {reading.index}"
    new = [n for n in needs if not n.running]
    if not new:
        names = ", ".join(n.service for n in needs)
        return result("gpu-free-vram", subject, node, "pass", f"{names} already running on it")
    names = ", ".join(n.service for n in new)
    claim = sum(n.claim_mib for n in new)
    finding = gpu_mod.check_free_vram(reading, claim)
    free = reading.memory_free_mib
    if finding.status != "fail" or free is None:
        return _finding("gpu-free-vram", subject, node, finding, f" (gpu_memory_utilization of {names})")
    return result(
        "gpu-free-vram", subject, node, "fail",
        f"GPU {reading.index}: {free} MiB free now, but {names} claim {claim} MiB "
        f"(gpu_memory_utilization x the card's {new[0].total_mib} MiB): vLLM refuses to start below "
        "its utilization target (V1) or runs out of memory allocating its KV cache (V0)",
        hint=_free_vram_hint(new, free),
    )


def _free_vram_hint(new: Sequence[VramNeed], free: int) -> str:
    stop = ("stop what holds VRAM (`nvidia-smi --query-compute-apps=pid,used_memory "
            "--format=csv`)")
    start = sum(n.start_mib for n in new)
    if len(new) == 1 and free >= start:
        util = math.floor(free / new[0].total_mib * 100) / 100
        return (f"{stop}, or lower {new[0].service}'s gpu_memory_utilization to {util:.2f}: "
                f"{free} MiB still hold one full-length sequence (it needs {start} MiB)")
    return f"{stop}: even the least that starts {'them' if len(new) > 1 else 'it'} is {start} MiB"


def _finding(
    check: str, subject: str, node: str, finding: gpu_mod.GpuFinding, suffix: str = ""
) -> CheckResult:
    return result(check, subject, node, finding.status, finding.message + suffix, finding.hint)


# --- ports ----------------------------------------------------------------------------------------

def is_container_of(container: Mapping[str, Any], node: Node, service: str) -> bool:
    return (
        container_label(container, "com.docker.compose.project") == node.project
        and container_label(container, "com.docker.compose.service") == service
    )


def container_name(container: Mapping[str, Any]) -> str:
    return str(container.get("Names") or container.get("ID") or "?")


def check_ports(node: Node, services: Iterable[Service], facts: NodeFacts) -> list[CheckResult]:
    return [check_port(node, svc, port.port, facts) for svc in services for port in svc.ports]


def check_port(node: Node, svc: Service, port: int, facts: NodeFacts) -> CheckResult:
    subject = f"{port}/tcp ({svc.name})"
    holders = [c for c in facts.containers if port in published_ports(c)]
    if any(is_container_of(c, node, svc.name) for c in holders):
        return result("port", subject, node.name, "pass", f"held by {svc.name}'s own container")
    if svc.protected and holders:
        return result("port", subject, node.name, "pass",
                      f"held by {container_name(holders[0])}, the existing protected {svc.name}")
    if holders:
        other = holders[0]
        return result(
            "port", subject, node.name, "fail",
            f"port {port} is taken by container {container_name(other)} "
            f"(image {other.get('Image', '?')}), not by {svc.name}",
            hint=f"stop or remove that container (`docker rm -f {container_name(other)}`) or "
            f"publish {svc.name} on another port",
        )
    own = [c for c in facts.containers if is_container_of(c, node, svc.name)]
    if port in (facts.listening or ()) and any(c.get("State") == "running" for c in own):
        return result("port", subject, node.name, "pass",
                      f"held by {svc.name}'s own container {container_name(own[0])} (host network)")
    if facts.listening is None:
        return result("port", subject, node.name, "warn",
                      f"could not list listening ports (`ss -ltnH` failed); {port} not checked")
    if port in facts.listening:
        return result(
            "port", subject, node.name, "fail",
            f"port {port} is in use by a process outside docker, {svc.name} cannot publish it",
            hint=f"find it with `ss -ltnp 'sport = :{port}'` on {node.name} and stop it",
        )
    return result("port", subject, node.name, "pass", f"port {port} is free")


# --- protected services ---------------------------------------------------------------------------


def protected_container(node: Node, svc: Service, facts: NodeFacts) -> Mapping[str, Any] | None:
    """The running instance of a protected service: its compose container, or (adopted,
    created outside swarm) the container publishing its first port."""
    for container in facts.containers:
        if is_container_of(container, node, svc.name):
            return container
    first = svc.ports[0].port if svc.ports else None
    return next((c for c in facts.containers if first in published_ports(c)), None)


def check_protected(
    node: Node, svc: Service, facts: NodeFacts, outcomes: Sequence[Outcome]
) -> CheckResult:
    """A protected service must exist, run, be healthy and answer its probes."""
    container = protected_container(node, svc, facts)
    if container is None:
        return _protected_missing(node, svc, facts)
    name = container_name(container)
    state, status = str(container.get("State", "")), str(container.get("Status", ""))
    if state != "running":
        return result(
            "protected", svc.name, node.name, "fail",
            f"protected {svc.name} container {name} is {state or 'not running'} ({status}); "
            "a deploy would recreate it",
            hint=f"start it by hand (`docker start {name}` on {node.name}) and check its data; "
            "swarm never recreates it",
        )
    if "unhealthy" in status or "health: starting" in status:
        return result("protected", svc.name, node.name, "fail",
                      f"protected {svc.name} container {name} is {status}",
                      hint=f"look at its logs: `docker logs {name}` on {node.name}")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        first = failed[0]
        return result(
            "protected", svc.name, node.name, "fail",
            f"protected {svc.name} ({name}) runs but {first.probe} answered: {first.detail}",
            hint=f"check {svc.name} on {node.name} before deploying; swarm will not touch it",
        )
    answered = "; ".join(o.probe for o in outcomes) or "no probes"
    return result("protected", svc.name, node.name, "pass",
                  f"{name} running ({status}); answered {answered}")


def _protected_missing(node: Node, svc: Service, facts: NodeFacts) -> CheckResult:
    release = facts.current.get("id") if facts.current else None
    if svc.name in facts.applied:
        return result(
            "protected", svc.name, node.name, "fail",
            f"protected {svc.name} was deployed (release {release}) but has no container now; "
            "a deploy would create an empty one",
            hint=f"restore {svc.name} on {node.name} by hand (its volume holds the data) first",
        )
    return result(
        "protected", svc.name, node.name, "warn",
        f"no {svc.name} container on {node.name} yet: this deploy creates it (first deploy)",
        hint=f"if {svc.name} already exists elsewhere on {node.name}, stop now: it must publish "
        "the same port to be adopted",
    )


# --- backups -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupWant:
    """A stateful service on a node and how old its newest backup may be (backup_max_age)."""

    service: str
    max_age_s: float


def check_backup(node: str, want: BackupWant, facts: NodeFacts) -> CheckResult:
    """Warn when a deployed stateful service has no backup younger than its maximum age."""
    subject, limit = want.service, show_span(want.max_age_s)
    hint = (f"run `swarm backup --service {want.service}`, and schedule it: "
            "`swarm schedule install --backup`")
    if want.service not in facts.applied:
        return result("backup", subject, node, "pass", f"{want.service} is not deployed yet: nothing to back up")
    if facts.backups is None:
        return result("backup", subject, node, "warn",
                      f"could not read the backups of {want.service}: {facts.backup_error or 'no answer'}")
    newest = facts.backups.get(want.service)
    if newest is None:
        return result("backup", subject, node, "warn",
                      f"{want.service} has no backup on {node} (it should have one younger than {limit})",
                      hint=hint)
    age = max(0.0, (facts.backup_clock or id_time(newest)) - id_time(newest))
    shown = show_span(age - age % 60) if age >= 60 else f"{age:.0f}s"
    if age > want.max_age_s:
        return result("backup", subject, node, "warn",
                      f"the newest backup of {want.service} ({newest}) is {shown} old, older than its "
                      f"backup_max_age {limit}", hint=hint)
    return result("backup", subject, node, "pass",
                  f"newest backup {newest}, {shown} old (backup_max_age {limit})")


# --- secrets ---------------------------------------------------------------------------------------


def check_secrets(
    node: str, needed: Mapping[str, Sequence[str]], missing: Sequence[str] | SwarmError,
    where: Mapping[str, str],
) -> list[CheckResult]:
    """`needed`: secret name -> services on `node` using it; `where`: name -> Vault location."""
    if not needed:
        return []
    if isinstance(missing, SwarmError):
        return [result("secrets", "vault", node, "fail",
                       f"cannot check {len(needed)} secret(s) in Vault: {missing.message}",
                       hint=missing.hint)]
    out = [
        result(
            "secrets", name, node, "fail",
            f"secret {name} ({where.get(name, '?')}) is missing in Vault; needed by "
            f"{', '.join(needed[name])}",
            hint="push it with `swarm secrets push --env-file FILE`",
        )
        for name in sorted(needed)
        if name in missing
    ]
    present = len(needed) - len(out)
    if present:
        out.append(result("secrets", "vault", node, "pass",
                          f"{present} of {len(needed)} secret(s) present in Vault (names only)"))
    return out


# --- network -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dependency:
    """`source` (on its node) talks to `target` on another node at address:port."""

    source: Service
    target: Service
    port: int
    optional: bool = False  # the target is on an optional node or in an optional phase
    coming: bool = False    # the deploy being checked brings the target up itself
    off: bool = False       # the target's node is optional and did not answer: not probed

    @property
    def endpoint(self) -> str:
        return host_port(self.target.address, self.port)


def check_network(node: str, deps: Sequence[Dependency], facts: NodeFacts) -> list[CheckResult]:
    by_endpoint: dict[str, list[Dependency]] = {}
    for dep in deps:
        by_endpoint.setdefault(dep.endpoint, []).append(dep)
    return [_network_result(node, group, facts) for group in by_endpoint.values()]


def _network_result(node: str, deps: Sequence[Dependency], facts: NodeFacts) -> CheckResult:
    target = deps[0].target
    sources = ", ".join(sorted({d.source.name for d in deps}))
    subject = f"{target.node}:{deps[0].port} ({target.name})"
    if deps[0].off:
        return result("network", subject, node, "warn",
                      f"optional {target.node} is off: {node} -> {target.name} at {deps[0].endpoint} "
                      "not probed", hint=f"fine while {target.node} is off; {sources} will miss it")
    probe = facts.probes.get(deps[0].endpoint)
    if probe is None or probe.untested:
        why = probe.detail if probe else facts.probe_error or "no answer"
        return result("network", subject, node, "warn", f"could not test {deps[0].endpoint}: {why}")
    if probe.open:
        return result("network", subject, node, "pass",
                      f"{node} reaches {target.name} at {deps[0].endpoint} (for {sources})")
    if probe.refused and deps[0].coming:
        return result("network", subject, node, "warn",
                      f"{target.name} on {target.node} is not up yet: this deploy brings it up "
                      f"(phase {target.phase}) before {sources}")
    if deps[0].optional:
        return result(
            "network", subject, node, "warn",
            f"{node} cannot reach optional {target.name} at {deps[0].endpoint} on {target.node}: "
            f"{probe.detail}",
            hint=f"fine while {target.node} is not deployed; {', '.join(sorted({d.source.name for d in deps}))} "
            "will miss it",
        )
    if not probe.refused:
        return result(
            "network", subject, node, "fail",
            f"{node} cannot reach {target.node} at {deps[0].endpoint} ({target.name}, needed by "
            f"{sources}): {probe.detail}",
            hint=f"check routing and firewalls between {node} and {target.node} "
            "(tailnet ACLs, iptables), from the node itself",
        )
    return _refused(node, subject, deps, probe.detail)


def _refused(node: str, subject: str, deps: Sequence[Dependency], detail: str) -> CheckResult:
    target, source_phase = deps[0].target, min(d.source.phase for d in deps)
    where = f"{deps[0].endpoint} ({target.name} on {target.node})"
    if target.phase < source_phase:
        return result(
            "network", subject, node, "fail",
            f"{target.node} answers but {where} refuses connections ({detail}): {target.name} "
            f"(phase {target.phase}) should already run",
            hint=f"deploy phase {target.phase} first, or look at {target.name}'s logs",
        )
    if target.phase == source_phase:
        return result("network", subject, node, "pass",
                      f"{target.node} reachable; {where} starts in this same phase")
    return result(
        "network", subject, node, "warn",
        f"{target.node} reachable, but {where} is not up yet: it comes in phase {target.phase}",
        hint=f"requests from {node} to {target.name} fail until phase {target.phase} is deployed",
    )


# --- hosts that serve only Ollama (litellm-tailscale-ollama.md) --------------------------------


def check_ollama_exposure(node: Node, services: Sequence[Service], facts: NodeFacts) -> list[CheckResult]:
    """On a node that runs Ollama, every other listening TCP port is a warning.

    The document's Tailscale ACL lets the proxy reach `hab:11434` and nothing else; swarm
    cannot read the tailnet's ACLs, but it can see what such a host exposes: any port
    besides Ollama's and SSH is one the proxy (and every other tailnet member) may reach.
    That the proxy reaches 11434 is `check_network`'s part (the LiteLLM config names it).
    """
    ollama = [s for s in services if s.role == "ollama"]
    if not ollama or facts.listening is None:
        return []
    expected = {p.port for s in ollama for p in s.ports} | {node.ssh.port}
    others = sorted(facts.listening - expected)
    subject = f"{node.name} exposure"
    names = ", ".join(s.name for s in ollama)
    if not others:
        return [result("ollama-acl", subject, node.name, "pass",
                       f"{node.name} listens only on Ollama's {', '.join(map(str, sorted(expected - {node.ssh.port})))} "
                       f"({names}) and SSH {node.ssh.port}")]
    owners = {p.port: s.name for s in services for p in s.ports}
    listed = ", ".join(f"{p} ({owners[p]})" if p in owners else str(p) for p in others)
    return [result("ollama-acl", subject, node.name, "warn",
                   f"{node.name} serves Ollama ({names}) but also listens on {listed}: the proxy "
                   "(and the rest of the tailnet) may reach those too",
                   hint="the ACL intent is proxy -> this host:11434 only: close those ports, bind them "
                        "to localhost, or deny them in the tailnet ACL")]
