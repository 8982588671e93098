"""`swarm models ls | stage | gc | pin`: the fleet's stores, read and changed from the controller.

Each command connects to the chosen nodes (for `stage`, every node of the inventory it can
reach: any of them may hold a revision another needs) and works from what they answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator import commands as cmd
from orchestrator.clients.hub import HubClient
from orchestrator.clients.secrets_source import SecretSource
from orchestrator.commands import models as mcmd
from orchestrator.config.project import Project
from orchestrator.errors import InputError, SwarmError
from orchestrator.events import EventBus
from orchestrator.models.gc import NodeModels, read_references, removal_paths
from orchestrator.models.resolve import ask_hub, hub_client, moving_pins, with_commits
from orchestrator.models.stage import Needs, Outcome, Stager, needs_of
from orchestrator.models.store import read_store
from orchestrator.render.release import RELEASE_FILE
from orchestrator.render.services import Service
from orchestrator.render.weights import WeightsPin
from orchestrator.secrets import Secret
from orchestrator.transport.fleet import Fleet


def placed(services: Iterable[Service], nodes: Iterable[str], phases: Sequence[int] | None = None) -> list[Service]:
    """Of a run's services (its selection's: engine/selection.py), those on these nodes (and
    phases) that serve a model."""
    names = set(nodes)
    return [s for s in services if s.weights is not None and s.node in names
            and (phases is None or s.phase in phases)]


def wanted_by_node(services: Sequence[Service]) -> dict[str, set[WeightsPin]]:
    out: dict[str, set[WeightsPin]] = {}
    for svc in services:
        if svc.weights is not None and svc.weights.pinned:
            out.setdefault(svc.node, set()).add(svc.weights)
    return out


async def read_models(project: Project, fleet: Fleet) -> dict[str, NodeModels | SwarmError]:
    """Every reachable node's store and which of its releases reference which revision."""

    async def one(name: str) -> NodeModels:
        root = project.inventory.node(name).deploy_root
        store, refs = await asyncio.gather(read_store(fleet[name], root), read_references(fleet[name], root))
        return NodeModels(store, refs)

    answers = await fleet.map(lambda t: one(t.host), fleet.reachable)
    out: dict[str, NodeModels | SwarmError] = {}
    for name, answer in answers.items():
        out[name] = answer if isinstance(answer, NodeModels | SwarmError) else \
            SwarmError(f"{name}: {type(answer).__name__}: {answer}")
    out.update(fleet.unreachable)
    return out


async def stage(project: Project, fleet: Fleet, bus: EventBus, services: Sequence[Service],
                token: Secret | None) -> tuple[Needs, Outcome]:
    """Every chosen node gets (and has checked) the weights placed on it; bad copies are replaced.
    A moving revision (`main`) is staged at the commit the hub says it names now."""
    resolution = await ask_hub(hub_client(project, token), moving_pins(services))
    if resolution.note():
        bus.emit("models", "info", message=str(resolution.note()))
        currents = await current_releases(project, fleet, sorted({s.node for s in services}))
        services = [svc for node in sorted({s.node for s in services})
                    for svc in resolution.staged([s for s in services if s.node == node], currents.get(node))]
    else:
        services = with_commits(services, resolution.chosen(services, {}))
    needs = needs_of(services, check=[s.name for s in services])
    outcome = await Stager(project, fleet, bus, token=token, repair=True).run(needs)
    return needs, outcome


async def current_releases(project: Project, fleet: Fleet, nodes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each node's current release record (the commits its services serve), where it has one."""
    async def one(node: str) -> dict[str, Any] | None:
        root = project.inventory.node(node).deploy_root
        result = await fleet[node].run(cmd.read_file(f"{root}/current/{RELEASE_FILE}"), check=False)
        text = cmd.parse_read_file(result.stdout) if result.ok else None
        try:
            record = json.loads(text) if text else None
        except json.JSONDecodeError:
            return None
        return record if isinstance(record, dict) else None

    found = await asyncio.gather(*(one(n) for n in nodes if n in fleet and n not in fleet.unreachable))
    reachable = [n for n in nodes if n in fleet and n not in fleet.unreachable]
    return {n: r for n, r in zip(reachable, found, strict=True) if r is not None}


@dataclass(frozen=True)
class Collection:
    node: str
    paths: tuple[str, ...]
    kept: dict[WeightsPin, tuple[str, ...]]   # revision -> releases that reference it
    freed_bytes: int


def collection(project: Project, models: NodeModels, wanted: set[WeightsPin]) -> Collection:
    paths = removal_paths(models, wanted)
    freed = sum(h.snapshot.total_bytes for h in models.removable(wanted) if h.snapshot)
    return Collection(models.store.node, tuple(paths), dict(models.used_by), freed)


async def remove(fleet: Fleet, plan: Collection) -> None:
    if plan.paths:
        await fleet[plan.node].run(mcmd.remove_dirs(plan.paths), timeout=600)


def hub_token(project: Project) -> Secret | None:
    """The hub token from Vault, if the project declares one and Vault answers (else none)."""
    source = SecretSource.from_project(project)
    name = project.inventory.spec.models.token_secret
    if name not in source.declared:
        return None
    try:
        return source.read({name}).get(name)
    except (SwarmError, OSError):
        return None


def unpinned(services: Sequence[Service]) -> dict[str, list[str]]:
    """repo -> the services serving it without a pinned commit."""
    out: dict[str, list[str]] = {}
    for svc in services:
        if svc.weights is not None and not svc.weights.pinned:
            out.setdefault(svc.weights.repo, []).append(f"{svc.node}:{svc.name}")
    return out


def resolve(project: Project, repos: Sequence[str], token: Secret | None) -> dict[str, str]:
    """Each repository's `main` commit on the hub, today."""
    client = HubClient(str(project.inventory.spec.models.hub), token)
    return {repo: client.snapshot(repo, "main").commit for repo in repos}


def write_pins(project: Project, pins: dict[str, str]) -> list[str]:
    """Write `revision: <commit>` under each repository in roles/vllm/models.yml (entries kept as
    they are, comments too); repositories the catalogue does not list are returned, not added."""
    role = project.roles.get("vllm")
    if role is None:
        raise InputError("no vllm role: there is no model catalogue to write pins into")
    path = role.dir / "models.yml"
    lines = path.read_text().splitlines(keepends=True)
    left = []
    for repo, commit in pins.items():
        at = next((i for i, line in enumerate(lines) if line.rstrip() == f"  {repo}:"), None)
        if at is None:
            left.append(repo)
            continue
        end = at + 1
        while end < len(lines) and lines[end].startswith("    "):
            end += 1
        body = [line for line in lines[at + 1:end] if not line.lstrip().startswith("revision:")]
        lines[at + 1:end] = [f"    revision: {commit}\n", *body]
    path.write_text("".join(lines))
    return left
