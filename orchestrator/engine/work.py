"""A phase's work on its nodes, from the plan: the release each node gets and its steps.

`phase_work` turns the phase's `NodeChange`s into the runner's `PhaseWork`: per changed
node the release id (stamped under the lock, strictly increasing per node), its record,
the apply step (the release as one tar + `compose up` of what changed) and the switch step
(`current`, audit line, prune, and the node's unlock when this is its last phase of the
run) — steps as data (steps.py), executed and unwound by runner.py.

Each changed service's way of going live is chosen by `rollout.plan_node` (rollout.py):
recreated by the apply step's `compose up`, reloaded in place (config files only), or
rolled (a model server behind the front door: drain, swap, gate, ready, one instance at a
time, after the apply step) — the node's work carries which.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.engine import rollout
from orchestrator.engine.journal import NodeWork, PhaseWork
from orchestrator.engine.plan import NodeChange, applied_after
from orchestrator.engine.selection import PhaseScope
from orchestrator.engine.steps import apply_step, audit_line, prune_list, restore_of, switch_step
from orchestrator.facts.node import NodeState
from orchestrator.render.pins import (
    moved_images,
    moved_weights,
    recorded_images,
    recorded_models,
    release_compose,
)
from orchestrator.render.release import ReleaseContent, manifest, release_id, tarball
from orchestrator.render.services import Service
from orchestrator.render.weights import WeightsPin


@dataclass(frozen=True)
class Context:
    """What every node's work of the run shares."""

    by: str
    run_id: str
    keep_releases: int
    pins: Mapping[str, str]                       # image -> repo@sha256 (preflight's answers)
    unlock: Callable[[str], Any]                  # node -> the command that releases its lock
    weights: Mapping[str, dict[str, Any]] = field(default_factory=dict)   # service -> the revision it serves
    services_of: Callable[[str], Sequence[Service]] = lambda _node: ()   # node -> every service rendered for it
    doors: Sequence[Service] = ()                 # the front doors of the run's services (rollout.doors_of)


@dataclass(frozen=True)
class NodeRelease:
    """A node's new release, as the switch leaves it (the runbook's state after the phase)."""

    record: dict[str, Any]
    unlocks: bool
    pruned: tuple[str, ...]

    def state_after(self, state: NodeState) -> NodeState:
        after = state.after(self.record)
        return replace(after, releases=tuple(r for r in after.releases if r not in self.pruned))


def phase_work(scope: PhaseScope, mine: Sequence[NodeChange], states: Mapping[str, NodeState],
               last_phase: Mapping[str, int], ctx: Context) -> tuple[PhaseWork, dict[str, NodeRelease]]:
    """The phase's work, and per node the release it will leave (see the module docstring)."""
    nodes, releases = [], {}
    for change in mine:
        unlocks = len(mine) == 1 and last_phase[change.node.name] == scope.id
        work, releases[change.node.name] = node_work(change, states[change.node.name], unlocks, ctx)
        nodes.append(work)
    return PhaseWork(phase=scope.id, name=scope.phase.name, action="deploy", spec=scope.phase.spec.gate,
                     nodes=nodes, consul_services=[s for c in mine for s in c.services]), releases


def node_work(change: NodeChange, state: NodeState, unlocks: bool, ctx: Context) -> tuple[NodeWork, NodeRelease]:
    node, previous = change.node, state.current_id
    release = release_id(change.content.hash, state.releases)
    plan = rollout.plan_node(change.to_apply, change.reasons, change.services, state, node.project,
                             shapes=change.content.shapes, configs=change.content.configs, doors=ctx.doors)
    images = {**recorded_images(state.current),
              **{s.name: ctx.pins[s.image] for s in change.services if s.image in ctx.pins}}
    models = {**dict((state.current or {}).get("models") or {}),
              **{s.name: ctx.weights[s.name] for s in change.services if s.name in ctx.weights}}
    record = manifest(change.content, release=release, phase=change.phase.id, applied=applied_after(change, state),
                      by=ctx.by, previous=previous, run=ctx.run_id, images=images, models=models,
                      **rollout.release_extra(change.content.shapes, change.content.configs, state))
    infra = change.infra
    content = pinned(change, images, recorded_models(record), ctx.services_of(node.name))
    apply = apply_step(node, release, previous=previous, previous_applied=state.applied, to_apply=plan.applied_by_step,
                       tar=tarball(content, release, record),
                       directories=infra.directories if infra else (), network=infra.network if infra else None,
                       hooks=rollout.apply_hooks(node, plan, state, release))
    pruned = prune_list(state.releases, ctx.keep_releases, new=release, previous=previous)
    audit = audit_line(node.name, "deploy", change.phase.id, ctx.by, release=release, previous=previous,
                       services=list(change.to_apply), adopted=list(change.adoptions))
    switch = switch_step(node, release, previous=previous, audit=audit, prune=pruned,
                         unlock=ctx.unlock(node.name) if unlocks else None)
    work = NodeWork(node=node, release=release, previous=previous, apply=apply, switch=switch,
                    restore=restore_of(previous, state.applied, plan.applied_by_step, ()), gated=change.services,
                    rolling=plan.rolling, reloads=plan.reload)
    return work, NodeRelease(record, unlocks, tuple(pruned))


def with_moved_images(change: NodeChange, state: NodeState, digests: Mapping[str, str]) -> NodeChange:
    """A tag that names another digest than the node runs is a change (render/pins.py)."""
    moved = moved_images(change.services, recorded_images(state.current), digests)
    new = [s for s in moved if s not in change.to_apply and s not in change.adopted]
    if not new:
        return change
    return replace(change, to_apply=(*change.to_apply, *new), reasons={**change.reasons, **{s: moved[s] for s in new}})


def with_moved_weights(change: NodeChange, state: NodeState, resolved: Mapping[WeightsPin, str]) -> NodeChange:
    """A branch that names another commit than the node serves is a change (render/pins.py)."""
    moved = moved_weights(change.services, recorded_models(state.current), resolved)
    new = [s for s in moved if s not in change.to_apply and s not in change.adopted]
    if not new:
        return change
    return replace(change, to_apply=(*change.to_apply, *new), reasons={**change.reasons, **{s: moved[s] for s in new}})


def pinned(change: NodeChange, images: Mapping[str, str], models: Mapping[str, WeightsPin],
           services: Sequence[Service]) -> ReleaseContent:
    """The release's compose names every image by the digest, and every moving weights revision by
    the commit, its release records (render/pins.py)."""
    root = change.node.deploy_root
    text = release_compose(change.content.files["compose.yml"], services, images, models, lambda _node: root)
    return replace(change.content, files={**change.content.files, "compose.yml": text})
