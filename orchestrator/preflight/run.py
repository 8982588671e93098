"""Run preflight: gather facts from every node, the registry and Vault at once, then judge.

`preflight(project, scope)` opens one SSH connection per node of the scope (an optional
node gets its short connect window: one that is off is named, never waited for) and runs
ONE batched command on each (`facts.probe_script`), while the registry is asked about
every image of the scope and Vault about every secret, all concurrently; protected
services are probed over HTTP from here. The answers go through the pure checks of
`checks.py`. The scope comes from the run's selection (`Selection.preflight_scope`).

A deploy runs the same checks on the nodes it is about to change (`check_deploy`): their
facts come in its first command on each node (`plan_requests(...).commands(node)`,
guarded so they run only where the node took the lock); `require_passed` stops the
deploy before any change.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import httpx

from orchestrator.clients.images import ImageRef, parse_image_ref
from orchestrator.clients.registry import Credentials, ImageIndex, RegistryClient, config_env
from orchestrator.clients.secrets_source import SecretSource
from orchestrator.commands import Command, StepResult
from orchestrator.config.inventory import Node
from orchestrator.config.project import Project
from orchestrator.errors import RuntimeFailure, ServiceError, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.gpu import cuda_tuple, required_cuda
from orchestrator.facts.probes import Outcome, ProbeNetwork, http_probe
from orchestrator.preflight import checks
from orchestrator.preflight.facts import FactsRequest, NodeFacts, Smoke, parse_facts, probe_script
from orchestrator.preflight.report import CheckResult, Report
from orchestrator.preflight.scope import (
    Scope,
    as_needs,
    dependencies,
    optional_services,
    vram_needs,
)
from orchestrator.render.backups import target_for
from orchestrator.render.services import Service, secrets_of
from orchestrator.secrets import Secret
from orchestrator.transport.base import Transport
from orchestrator.transport.fleet import Fleet

FACTS_TIMEOUT_S = 60.0
SMOKE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Options:
    smoke: bool = False


class PreflightFailed(RuntimeFailure):
    """A deploy's preflight gate found failing checks; nothing was changed (exit 1)."""


@dataclass(frozen=True)
class Requests:
    """What every node of a scope is asked, and the cross-node links that come from."""

    deps: tuple[checks.Dependency, ...]
    by_node: dict[str, FactsRequest]

    def commands(self, node: str) -> tuple[Command, ...]:
        return probe_script(self.by_node[node]).commands


@dataclass(frozen=True)
class Answers:
    """What preflight learns off the nodes: registry indexes, Vault gaps, protected probes."""

    images: dict[str, ImageIndex | SwarmError]
    registry_s: float
    missing: list[str] | SwarmError
    vault_s: float
    probes: dict[str, list[Outcome]]
    cuda: dict[tuple[str, str], checks.CudaNeed | SwarmError] = field(default_factory=dict)


# --- entry points ---------------------------------------------------------------------------


async def preflight(project: Project, scope: Scope, options: Options, bus: EventBus | None = None) -> Report:
    """Every check of the scope (see the module docstring)."""
    started = time.monotonic()
    async with Fleet.for_nodes(project.inventory, scope.nodes, optional=scope.optional) as fleet:
        await fleet.connect()
        waited = time.monotonic() - started   # an optional node that is off cost its connect window
        off = {n: e.message for n, e in fleet.unreachable.items() if n in scope.optional}
        ssh_errors = {n: e.message for n, e in fleet.unreachable.items() if n not in off}
        results, pins = await run_checks(project, scope.without(off), fleet.transports, ssh_errors,
                                         smoke=options.smoke)
    results = [*(replace(checks.check_off(scope_node(scope, n), why), duration_s=waited) for n, why in off.items()),
               *results]
    report = Report.of(results, pins, duration_s=time.monotonic() - started)
    _emit(bus or EventBus(), report, scope.phase)
    return report


def scope_node(scope: Scope, name: str) -> Node:
    return next(n for n in scope.nodes if n.name == name)


async def check_deploy(project: Project, scope: Scope, facts: Mapping[str, Sequence[StepResult]], *,
                       coming: Sequence[str], bus: EventBus, validated: Callable[[], object]) -> dict[str, str]:
    """A deploy's preflight on the nodes about to change (their facts came with the look):
    every check passes, or nothing changes (`PreflightFailed`). Returns the digest pinned
    per image. `validated` checks the rendered files with the real tools (in a thread)."""
    started = time.monotonic()
    requests = plan_requests(project, scope, coming=coming)
    parsed = {n.name: (parse_node_facts(requests, n.name, facts.get(n.name, ())), 0.0) for n in scope.nodes}
    answers, _ = await asyncio.gather(external_answers(project, scope, vault=False, facts=parsed),
                                      asyncio.to_thread(validated))
    results, pins = judge(project, scope, requests, parsed, {}, answers)
    report = Report.of(results, pins, duration_s=time.monotonic() - started)
    emit_report(bus, report, scope.phase)
    require_passed(report)
    return dict(report.pins)


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


def emit_report(bus: EventBus, report: Report, phase: int | None) -> None:
    _emit(bus, report, phase)


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


# --- the run ------------------------------------------------------------------------------------


def plan_requests(project: Project, scope: Scope, *, smoke: bool = False, coming: Sequence[str] = ()) -> Requests:
    """Each node's facts request and the links between nodes the rendered fleet uses
    (`coming`: services the deploy being checked brings up itself; links to the scope's
    optional nodes that are off are not probed)."""
    everyone = scope.everyone
    deps = dependencies(scope.fleet, scope.services, everyone, optional_services(project, everyone), coming,
                        off=scope.off)
    return Requests(deps=tuple(deps),
                    by_node={n.name: _request(project, scope, n, deps, smoke) for n in scope.nodes})


async def external_answers(project: Project, scope: Scope, *, vault: bool = True,
                           facts: Mapping[str, tuple[NodeFacts | SwarmError | None, float]] | None = None
                           ) -> Answers:
    """Registry, Vault and HTTP answers, all at once (`vault=False`: the caller read the secrets);
    with the nodes' `facts`, the CUDA each GPU image needs against what their drivers support."""
    secrets_work = (asyncio.to_thread(_missing_secrets, project, scope) if vault
                    else _nothing_missing())
    (images, registry_s), (missing, vault_s), probes, cuda = await asyncio.gather(
        _timed(_images(project, scope)), _timed(secrets_work), _protected_probes(project, scope),
        cuda_answers(project, scope, facts or {}))
    return Answers(images, registry_s, missing, vault_s, probes, cuda)


async def cuda_answers(project: Project, scope: Scope,
                       facts: Mapping[str, tuple[NodeFacts | SwarmError | None, float]]
                       ) -> dict[tuple[str, str], checks.CudaNeed | SwarmError]:
    """Per GPU image and platform: the CUDA it needs (its config's env), and for each driver CUDA of
    the nodes that cannot run it, the newest tag of that image that would run there."""
    drivers: dict[tuple[str, str], set[str]] = {}
    for svc in scope.services:
        answer = facts.get(svc.node, (None, 0.0))[0]
        if svc.gpu and isinstance(answer, NodeFacts):
            drivers.setdefault((svc.image, svc.platform), set()).update([answer.cuda_version or ""])
    if not drivers:
        return {}
    async with registry_client(project) as client:
        found = await asyncio.gather(*(_cuda_need(client, image, platform, cudas)
                                       for (image, platform), cudas in drivers.items()), return_exceptions=True)
    return {key: answer if isinstance(answer, checks.CudaNeed | SwarmError) else
            ServiceError(f"{key[0]}: {type(answer).__name__}: {answer}") for key, answer in zip(drivers, found, strict=True)}


async def _cuda_need(client: RegistryClient, image: str, platform: str, cudas: set[str]) -> checks.CudaNeed:
    needed = required_cuda(config_env(await client.config(image, platform)))
    fits: dict[str, str | None] = {}
    if needed is not None:
        for cuda in sorted(c for c in cudas if c and cuda_tuple(c) < cuda_tuple(needed)):
            fits[cuda] = await newest_fit(client, image, platform, cuda)
    return checks.CudaNeed(image, needed, fits)


async def newest_fit(client: RegistryClient, image: str, platform: str, cuda: str, limit: int = 10) -> str | None:
    """The newest tag older than `image`'s, of the same shape (v0.6.3 -> vX.Y.Z), whose CUDA fits."""
    ref = parse_image_ref(image)
    if not ref.tag:
        return None
    shape = re.compile(re.sub(r"\d+", r"\\d+", re.escape(ref.tag)))
    try:
        tags = await client.tags(ref)
    except SwarmError:
        return None
    older = sorted((t for t in tags if shape.fullmatch(t) and checks.version_tuple(t) < checks.version_tuple(ref.tag)),
                   key=checks.version_tuple, reverse=True)
    for tag in older[:limit]:
        candidate = ImageRef(ref.registry, ref.repository, tag)
        try:
            needed = required_cuda(config_env(await client.config(candidate, platform)))
        except SwarmError:
            continue
        if needed is None or cuda_tuple(needed) <= cuda_tuple(cuda):
            return f"{ref.repository}:{tag}"
    return None


async def _nothing_missing() -> list[str]:
    return []


def judge(project: Project, scope: Scope, requests: Requests,
          facts: Mapping[str, tuple[NodeFacts | SwarmError | None, float]],
          ssh_errors: Mapping[str, str], answers: Answers) -> tuple[list[CheckResult], dict[str, str]]:
    """Every check of `scope` from the facts and answers; plus the digest pinned per image."""
    out: list[CheckResult] = []
    for node in scope.nodes:
        answer, seconds = facts.get(node.name, (None, 0.0))
        results = _node_results(project, scope, node, answer, ssh_errors, list(requests.deps),
                                answers.images, answers.probes, answers.cuda)
        out.extend(_timed_results(results, seconds, answers.registry_s))
    out.extend(_timed_results(_secret_results(project, scope, answers.missing), answers.vault_s, 0.0))
    pins = {ref: a.pinned for ref, a in answers.images.items() if isinstance(a, ImageIndex)}
    return out, pins


def parse_node_facts(requests: Requests, node: str, steps: Sequence[StepResult]
                     ) -> NodeFacts | SwarmError:
    try:
        return parse_facts(requests.by_node[node], steps, node)
    except SwarmError as exc:
        return exc


async def run_checks(
    project: Project, scope: Scope, transports: Mapping[str, Transport],
    ssh_errors: Mapping[str, str], *, smoke: bool,
) -> tuple[list[CheckResult], dict[str, str]]:
    """Every check of `scope`, and the digest pinned per image the registry answered for."""
    requests = plan_requests(project, scope, smoke=smoke)
    reachable = [n for n in scope.nodes if n.name not in ssh_errors]
    facts_task = asyncio.gather(*(_facts(transports[n.name], requests.by_node[n.name], n)
                                  for n in reachable))
    facts_list, answers = await asyncio.gather(facts_task, external_answers(project, scope))
    facts = dict(zip([n.name for n in reachable], facts_list, strict=True))
    answers = replace(answers, cuda=await cuda_answers(project, scope, facts))
    return judge(project, scope, requests, facts, ssh_errors, answers)


def _request(project: Project, scope: Scope, node: Node, deps: Sequence[checks.Dependency],
             smoke: bool) -> FactsRequest:
    mine = scope.services_on(node.name)
    targets = tuple(dict.fromkeys(d.endpoint for d in deps if d.source.node == node.name and not d.off))
    return FactsRequest(
        deploy_root=node.deploy_root, gpus=bool(node.gpus), targets=targets,
        smokes=_smokes(project, mine) if smoke else (),
        backups=tuple(w.service for w in backup_wants(project, mine)),
    )


def backup_wants(project: Project, services: Sequence[Service]) -> list[checks.BackupWant]:
    """The stateful services among `services` (a role's `backup:`), with their maximum age."""
    found = (target_for(project, s) for s in services)
    return [checks.BackupWant(t.service, t.max_age) for t in found if t is not None]


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
    return RegistryClient(insecure=insecure, credentials=credentials, token_realms=settings.token_realms)


async def current_digests(project: Project, refs: Sequence[str]) -> dict[str, str]:
    """The digest each image's tag names now: one HEAD each, all at once (an unreachable registry
    leaves its images out — the run then compares nothing for them)."""
    if not refs:
        return {}
    async with registry_client(project) as client:
        found = await asyncio.gather(*(client.digest(r) for r in refs), return_exceptions=True)
    return {ref: digest for ref, digest in zip(refs, found, strict=True) if isinstance(digest, str)}


async def _images(project: Project, scope: Scope) -> dict[str, ImageIndex | SwarmError]:
    refs = sorted({s.image for s in scope.services})
    if not refs:
        return {}
    async with registry_client(project) as client:
        return await client.platforms_many(refs)


def _missing_secrets(project: Project, scope: Scope) -> list[str] | SwarmError:
    source = SecretSource.from_project(project)
    names = secrets_of(scope.services)
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
    async with ProbeNetwork.for_inventory(project.inventory).client() as client:
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
    cuda: Mapping[tuple[str, str], checks.CudaNeed | SwarmError] | None = None,
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
    needs = as_needs(vram_needs(scope).get(node.name, []), _running(node, mine, facts))
    out += checks.check_gpus(node, facts, spec.min_driver, needs)
    out += checks.check_cuda(node, mine, facts, cuda or {})
    out += checks.check_ports(node, mine, facts)
    out += [checks.check_protected(node, s, facts, probes.get(s.name, [])) for s in mine if s.protected]
    out += checks.check_network(node.name, [d for d in deps if d.source.node == node.name], facts)
    out += [checks.check_backup(node.name, w, facts) for w in backup_wants(project, mine)]
    out += checks.check_ollama_exposure(node, mine, facts)
    return out


def _needs_docker(project: Project, scope: Scope, node: Node, mine: Sequence[Service]) -> bool:
    """Docker matters where services run or the fleet network is made; a phase of plain
    directories works on SSH-only machines."""
    if mine:
        return True
    phases = ([project.playbook.phase(i) for i in scope.phases] if scope.phases is not None
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
            for name in sorted(svc.secrets_used):
                needed.setdefault(name, []).append(svc.name)
        where = {n: f"{source.mount}/{source.full_path(source.declared[n])} key "
                    f"{source.declared[n].key}" for n in needed if n in source.declared}
        out += checks.check_secrets(node.name, needed, missing, where)
    return out
