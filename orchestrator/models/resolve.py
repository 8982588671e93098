"""Moving revisions resolved to commits at stage time, as an image tag is resolved to a digest.

Weights that follow `main` (or another branch or tag) are staged and served at the commit that
revision names when the run asks the hub: one `model_info` call per repository and revision, in
threads, while the SSH connections open (engine/runbook.py; `swarm models stage` likewise). The
release records the commit (`release.json` → `models`) and its compose mounts it (render/pins.py),
so a rollback, `gc` and `verify` see a commit like any pin, and a later run that finds the branch
moved applies the service again (render/pins.moved_weights), staging the new commit before the
phase. The no-op fast path asks the same question with the stdlib (clients/revisions.py).

The hub not answering is no error here: each service keeps the commit its node serves (its
current release's `models` entry), the run says so once (`note`), and nothing changes for it.
Only a service no node serves yet has no commit to stage; staging refuses it, naming it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.clients.hub import HubClient
from orchestrator.config.project import Project
from orchestrator.errors import SwarmError
from orchestrator.render.pins import recorded_models
from orchestrator.render.services import Service
from orchestrator.render.weights import WeightsPin
from orchestrator.secrets import Secret

ASK_TIMEOUT = 10.0   # seconds per model_info: a hub that does not answer must not hold up a deploy


@dataclass(frozen=True)
class Resolution:
    """What the hub said each moving revision names now, and why it said nothing for the others."""

    commits: dict[WeightsPin, str] = field(default_factory=dict)
    failed: dict[WeightsPin, str] = field(default_factory=dict)

    def chosen(self, services: Iterable[Service], recorded: Mapping[str, WeightsPin]) -> dict[str, WeightsPin]:
        """service -> the commit it is staged and served at: the hub's answer, else the one its
        node serves (recorded), else none (the service stays on its moving revision)."""
        out = {}
        for svc in services:
            pin = svc.weights
            if pin is None or not pin.moving:
                continue
            was = recorded.get(svc.name)
            if pin in self.commits:
                out[svc.name] = pin.at(self.commits[pin])
            elif was is not None and was.repo == pin.repo:
                out[svc.name] = was
        return out

    def staged(self, services: Sequence[Service], current: Mapping[str, Any] | None) -> list[Service]:
        """The services as staging sees them on a node whose current release is `current`."""
        return with_commits(services, self.chosen(services, recorded_models(current)))

    def keys(self) -> dict[str, str]:
        """`repo@branch` -> commit, as the plan record keeps them (engine/record.py)."""
        return {pin.key: commit for pin, commit in self.commits.items()}

    def note(self) -> str | None:
        """The one line a run says when the hub did not answer (None when it did)."""
        if not self.failed:
            return None
        pins = ", ".join(p.key for p in sorted(self.failed))
        why = next(iter(self.failed.values()))
        return (f"the hub did not say which commit {pins} names now ({why}): each node keeps serving "
                "the commit it has; no change for them")


def moving_pins(services: Iterable[Service]) -> list[WeightsPin]:
    return sorted({s.weights for s in services if s.weights is not None and s.weights.moving})


def hub_client(project: Project, token: Secret | None, timeout: float = ASK_TIMEOUT) -> HubClient:
    return HubClient(str(project.inventory.spec.models.hub), token, timeout=timeout)


async def ask_hub(hub: HubClient, pins: Sequence[WeightsPin]) -> Resolution:
    """Ask the hub, all at once, which commit each moving revision names."""
    if not pins:
        return Resolution()
    answers = await asyncio.gather(*(asyncio.to_thread(hub.commit_of, p.repo, p.revision) for p in pins),
                                   return_exceptions=True)
    commits, failed = {}, {}
    for pin, answer in zip(pins, answers, strict=True):
        if isinstance(answer, str):
            commits[pin] = answer
        elif isinstance(answer, SwarmError):
            failed[pin] = answer.message
        elif isinstance(answer, Exception):
            failed[pin] = f"{type(answer).__name__}: {answer}"
        else:
            raise answer
    return Resolution(commits, failed)


def with_commits(services: Iterable[Service], chosen: Mapping[str, WeightsPin]) -> list[Service]:
    """The services as staging sees them: a moving revision replaced by the commit chosen for it."""
    return [replace(s, weights=chosen[s.name]) if s.name in chosen else s for s in services]
