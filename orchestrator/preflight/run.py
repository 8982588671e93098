"""Run preflight: gather facts from every node, the registry and Vault at once, then judge.

`preflight(project, options)` opens one SSH connection per node and runs ONE batched
command on each (`facts.probe_script`), while the registry is asked about every image
of the scope and Vault about every secret, all concurrently; protected services are
probed over HTTP from here. The answers go through the pure checks of `checks.py`.

`gate_phase(project, phase_id, nodes, transports, bus)` is the same over connections a
deploy has already opened (the deploy still costs one connection per host); the deploy
calls it before touching anything and stops when the report has a failure
(`require_passed`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import httpx

from orchestrator.clients.registry import Credentials, ImageIndex, RegistryClient
from orchestrator.clients.secrets_source import SecretSource
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project
from orchestrator.engine.deploy import connect_all, open_transports
from orchestrator.engine.gate import Outcome, http_probe
from orchestrator.errors import RuntimeFailure, ServiceError, SwarmError
from orchestrator.events import EventBus
from orchestrator.preflight import checks
from orchestrator.preflight.facts import FactsRequest, NodeFacts, Smoke, parse_facts, probe_script
from orchestrator.preflight.report import CheckResult, Report
from orchestrator.preflight.scope import (
    Scope,
    as_needs,
    dependencies,
    fleet_render,
    optional_services,
    scope_for,
    vram_needs,
)
from orchestrator.render.services import Service, build_services
from orchestrator.secrets import Secret
from orchestrator.transport.base import Transport

FACTS_TIMEOUT_S = 60.0
SMOKE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Options:
    phase: int | None = None
    limit: str | None = None
    smoke: bool = False


class PreflightFailed(RuntimeFailure):
    """A deploy's preflight gate found failing checks; nothing was changed (exit 1)."""


# --- entry points ---------------------------------------------------------------------------


async def preflight(project: Project, options: Options, bus: EventBus | None = None) -> Report:
    """Every check of `options.phase` (None: all phases) on the nodes `options.limit` picks."""
    started = time.monotonic()
    scope = scope_for(project, options.phase, options.limit)
    transports = open_transports(project, list(scope.nodes), check=False)
    try:
        ssh_errors = await _connect_each(transports)
        results, pins = await run_checks(project, scope, transports, ssh_errors, smoke=options.smoke)
    finally:
        await asyncio.gather(*(t.close() for t in transports.values()), return_exceptions=True)
    report = Report.of(results, pins, duration_s=time.monotonic() - started)
    _emit(bus or EventBus(), report, options.phase)
    return report


async def gate_phase(
    project: Project, phase_id: int, nodes: Sequence[Node], transports: Mapping[str, Transport],
    bus: EventBus,
) -> Report:
    """The checks of one phase over already open transports; emits one event per problem."""
    started = time.monotonic()
    scope = scope_for(project, phase_id, nodes=[n.name for n in nodes])
    results, pins = await run_checks(project, scope, transports, {}, smoke=False)
    report = Report.of(results, pins, duration_s=time.monotonic() - started)
    _emit(bus, report, phase_id)
    return report


def require_passed(report: Report) -> None:
    """Raise PreflightFailed naming every failing check (the deploy stops before changes)."""
    if not report.failed:
        return
    lines = [f"{r.node or 'fleet'}: {r.check} {r.subject}: {r.message}" for r in report.failed]
    first_hint = next((r.hint for r in report.failed if r.hint), None)
    raise PreflightFailed(
        f"preflight: {len(lines)} check(s) failed, nothing was changed:\n  " + "\n  ".join(lines),
        hint=first_hint or "fix the failures above, or run `swarm preflight` for the full report",
    )


def _emit(bus: EventBus, report: Report, phase: int | None) -> None:
    for r in report.results:
        if r.status != "pass":
            bus.emit("preflight", "failed" if r.status == "fail" else "info", host=r.node,
                     phase=phase, message=f"{r.check} {r.subject}: {r.message}")
    counts = report.counts()
    state = "failed" if report.failed else "ok"
    bus.emit("preflight", state, phase=phase,
             message=f"preflight: {counts['pass']} passed, {counts['warn']} warning(s), "
             f"{counts['fail']} failed")


async def _connect_each(transports: Mapping[str, Transport]) -> dict[str, str]:
    """Open every connection at once; a node that cannot be reached is a result, not a crash."""
    names = list(transports)
    answers = await asyncio.gather(
        *(connect_all({n: transports[n]}, EventBus(), None) for n in names),
        return_exceptions=True,
    )
    return {n: _message(a) for n, a in zip(names, answers, strict=True) if isinstance(a, BaseException)}


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, SwarmError) else f"{type(exc).__name__}: {exc}"


# --- the run ------------------------------------------------------------------------------------


async def run_checks(
    project: Project, scope: Scope, transports: Mapping[str, Transport],
    ssh_errors: Mapping[str, str], *, smoke: bool,
) -> tuple[list[CheckResult], dict[str, str]]:
    """Every check of `scope`, and the digest pinned per image the registry answered for."""
    everyone = build_services(project)
    fleet = fleet_render(project, scope)
    deps = dependencies(fleet, scope.services, everyone, optional_services(project, everyone))
    requests = {n.name: _request(project, scope, n, deps, smoke) for n in scope.nodes}
    reachable = [n for n in scope.nodes if n.name not in ssh_errors]
    facts_task = asyncio.gather(*(_facts(transports[n.name], requests[n.name], n) for n in reachable))
    images_task = _images(project, scope)
    secrets_task = asyncio.to_thread(_missing_secrets, project, scope)
    probes_task = _protected_probes(project, scope)
    facts_list, (images, registry_s), (missing, vault_s), probes = await asyncio.gather(
        facts_task, _timed(images_task), _timed(secrets_task), probes_task
    )
    facts = dict(zip([n.name for n in reachable], facts_list, strict=True))
    out: list[CheckResult] = []
    for node in scope.nodes:
        answer, seconds = facts.get(node.name, (None, 0.0))
        results = _node_results(project, scope, node, answer, ssh_errors, deps, images, probes)
        out.extend(_timed_results(results, seconds, registry_s))
    out.extend(_timed_results(_secret_results(project, scope, missing), vault_s, 0.0))
    pins = {ref: a.pinned for ref, a in images.items() if isinstance(a, ImageIndex)}
    return out, pins


def _request(project: Project, scope: Scope, node: Node, deps: Sequence[checks.Dependency],
             smoke: bool) -> FactsRequest:
    mine = scope.services_on(node.name)
    targets = tuple(dict.fromkeys(d.endpoint for d in deps if d.source.node == node.name))
    return FactsRequest(
        deploy_root=node.deploy_root, gpus=bool(node.gpus), targets=targets,
        smokes=_smokes(project, mine) if smoke else (),
    )


def _smokes(project: Project, services: Sequence[Service]) -> tuple[Smoke, ...]:
    seen: dict[str, Smoke] = {}
    for svc in services:
        command = project.roles[svc.role].spec.image.version_command
        if command and svc.image not in seen:
            seen[svc.image] = Smoke(svc.image, svc.platform, tuple(command))
    return tuple(seen.values())


async def _facts(
    transport: Transport, request: FactsRequest, node: Node
) -> tuple[NodeFacts | SwarmError, float]:
    timeout = SMOKE_TIMEOUT_S if request.smokes else FACTS_TIMEOUT_S
    started = time.monotonic()
    try:
        answer = await transport.run(probe_script(request), check=False, timeout=timeout)
        return parse_facts(request, answer.steps, node.name), time.monotonic() - started
    except SwarmError as exc:
        return exc, time.monotonic() - started


T = TypeVar("T")


async def _timed(work: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    answer = await work
    return answer, time.monotonic() - started


def _timed_results(
    results: Sequence[CheckResult], node_s: float, registry_s: float
) -> list[CheckResult]:
    """What each check waited for: the node's facts command, or the registry for images."""
    return [replace(r, duration_s=registry_s if r.check == "image" else node_s) for r in results]


# --- registry, Vault, HTTP --------------------------------------------------------------------


def registry_client(project: Project) -> RegistryClient:
    settings = project.inventory.spec.registry
    insecure = [settings.mirror] if settings.mirror and settings.insecure else []
    credentials: dict[str, Credentials] = {}
    password = os.environ.get(settings.password_env or "") if settings.password_env else None
    if settings.mirror and settings.username and password:
        credentials[settings.mirror] = Credentials(settings.username, Secret(password, "registry"))
    return RegistryClient(insecure=insecure, credentials=credentials)


async def _images(project: Project, scope: Scope) -> dict[str, ImageIndex | SwarmError]:
    refs = sorted({s.image for s in scope.services})
    if not refs:
        return {}
    async with registry_client(project) as client:
        return await client.platforms_many(refs)


def _missing_secrets(project: Project, scope: Scope) -> list[str] | SwarmError:
    source = SecretSource.from_project(project)
    names = source.names_for(scope.services)
    if not names:
        return []
    try:
        return source.missing(names)
    except SwarmError as exc:
        return exc
    except Exception as exc:  # hvac / network errors the client did not wrap
        return ServiceError(f"Vault at {source.addr}: {type(exc).__name__}: {exc}",
                            hint="is Vault up and unsealed? `swarm vault unseal --key-file FILE`")


async def _protected_probes(project: Project, scope: Scope) -> dict[str, list[Outcome]]:
    protected = [s for s in scope.services if s.protected]
    if not protected:
        return {}
    async with httpx.AsyncClient() as client:
        answers = await asyncio.gather(*(_probe_all(client, s) for s in protected))
    return {s.name: a for s, a in zip(protected, answers, strict=True)}


async def _probe_all(client: httpx.AsyncClient, svc: Service) -> list[Outcome]:
    probes = [p for p in svc.probes if p.kind == "http" and not p.bearer_secret]
    return list(await asyncio.gather(*(http_probe(client, svc.address, p, {}) for p in probes)))


# --- judging -----------------------------------------------------------------------------------


def _node_results(
    project: Project, scope: Scope, node: Node, facts: NodeFacts | SwarmError | None,
    ssh_errors: Mapping[str, str], deps: Sequence[checks.Dependency],
    images: Mapping[str, ImageIndex | SwarmError], probes: Mapping[str, list[Outcome]],
) -> list[CheckResult]:
    mine = scope.services_on(node.name)
    image_results = _image_results(node, mine, images)
    if node.name in ssh_errors:
        return [checks.check_ssh(node, ssh_errors[node.name]), *image_results]
    if not isinstance(facts, NodeFacts):
        reason = facts.message if isinstance(facts, SwarmError) else "no answer"
        return [checks.check_ssh(node, f"logged in, but the facts command failed: {reason}"),
                *image_results]
    spec = project.inventory.spec
    out = [checks.check_ssh(node, None), checks.check_arch(node, facts)]
    if _needs_docker(project, scope, node, mine):
        out += checks.check_docker(node, facts, spec.min_docker)
        out.append(checks.check_compose(node, facts, spec.min_compose))
    out += checks.check_disk(node, facts, _disk_needed(project, mine, facts))
    out += image_results
    out += [checks.check_smoke(node.name, image, node.platform, step)
            for image, step in facts.smokes.items()]
    needs = as_needs(vram_needs(project, scope).get(node.name, []), _running(node, mine, facts))
    out += checks.check_gpus(node, facts, spec.min_driver, needs)
    out += checks.check_ports(node, mine, facts)
    out += [checks.check_protected(node, s, facts, probes.get(s.name, [])) for s in mine if s.protected]
    out += checks.check_network(node.name, [d for d in deps if d.source.node == node.name], facts)
    return out


def _needs_docker(project: Project, scope: Scope, node: Node, mine: Sequence[Service]) -> bool:
    """Docker matters where services run or the fleet network is made; a phase of plain
    directories works on SSH-only machines."""
    if mine:
        return True
    phases = ([project.playbook.phase(scope.phase)] if scope.phase is not None
              else list(project.playbook.phases))
    return any(p.kind == "infrastructure" and p.spec.infrastructure.network and node.name in p.hosts
               for p in phases)


def _image_results(
    node: Node, services: Sequence[Service], images: Mapping[str, ImageIndex | SwarmError]
) -> list[CheckResult]:
    users: dict[str, list[str]] = {}
    for svc in services:
        users.setdefault(svc.image, []).append(svc.name)
    return [checks.check_image(node.name, image, node.platform, images[image], names)
            for image, names in users.items() if image in images]


def _running(node: Node, services: Sequence[Service], facts: NodeFacts) -> list[str]:
    return [s.name for s in services
            if any(checks.is_container_of(c, node, s.name) and c.get("State") == "running"
                   for c in facts.containers)]


def _disk_needed(project: Project, services: Sequence[Service], facts: NodeFacts) -> float:
    """GB the roles declare for services not deployed yet (deployed ones hold theirs already)."""
    new = [s for s in services if s.name not in facts.applied]
    return sum(project.roles[s.role].spec.resources.disk_gb for s in new)


def _secret_results(
    project: Project, scope: Scope, missing: list[str] | SwarmError
) -> list[CheckResult]:
    source = SecretSource.from_project(project)
    out: list[CheckResult] = []
    for node in scope.nodes:
        needed: dict[str, list[str]] = {}
        for svc in scope.services_on(node.name):
            for name in sorted(source.names_for([svc])):
                needed.setdefault(name, []).append(svc.name)
        where = {n: f"{source.mount}/{source.full_path(source.declared[n])} key "
                    f"{source.declared[n].key}" for n in needed if n in source.declared}
        out += checks.check_secrets(node.name, needed, missing, where)
    return out
