"""The planner's first question: does anything differ from what the plan record says?

`first_question` asks it over the run's session (engine/session.py), importing neither the
validation models nor the template engine: the secrets are read (the one Vault reader, one
request per path) while the nodes connect, each node gets the same first command a full run
sends, and the registry, the hub and Consul are read while the nodes answer it. Every node
unchanged and running, the secrets' digest and Consul as recorded: the run is over. Anything
else — a node that differs (it took its lock), a container not running, a rotated secret, a
lost registration, a required node that does not answer — and the deploy goes on with the
same session, its connections and any lock taken (engine/deploy.py). The record itself, its
key and its reads: engine/record.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.engine.context import DeployRequest, DeployResult, new_run
from orchestrator.engine.record import (
    PlanRecord,
    Reads,
    consul_matches,
    secrets_digest,
    settled,
)
from orchestrator.engine.session import Look, Session
from orchestrator.errors import SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import NodeState
from orchestrator.secrets import Secret
from orchestrator.transport.dial import Dial
from orchestrator.transport.ssh import SshTarget


def session_of(record: PlanRecord, request: DeployRequest, bus: EventBus,
               dials: Mapping[str, Dial] | None = None) -> Session:
    """A session over the recorded nodes; `dials`: optional nodes whose connect already started."""
    ctx = new_run(request.by, "deploy", record.holder_phases)
    targets = [SshTarget.from_record(n.target) for n in record.nodes.values()]
    targets = [replace(t, early=(dials or {}).get(t.name)) for t in targets]
    return Session.over_ssh(targets, ctx, bus, roots={n: p.deploy_root for n, p in record.nodes.items()},
                            forks=request.forks)


@dataclass
class FirstAnswer:
    """What the record's question learned: `result` when the run is over, else why not (the
    session goes on, with the states read and any lock taken; `secrets` if they were read)."""

    why: str
    secrets: dict[str, Secret] | None
    result: DeployResult | None = None

    @property
    def noop(self) -> bool:
        return self.result is not None


async def first_question(record: PlanRecord, session: Session, bus: EventBus,
                         reader: Any = None, hub: Any = None) -> FirstAnswer:
    """Connect, read the secrets, look at every node — the same first command a full run sends.

    `reader` (RecordedVault -> secrets) is the Vault boundary, `hub` (PlanRecord -> what each
    weights branch names now) the hub's, for tests."""
    bus.emit("run", "start", message=f"phase {', '.join(map(str, record.phases))} on "
                                     f"{', '.join(record.nodes)} (as planned last time)")
    session.start()
    reads = Reads.start(record, reader, hub)
    secrets = await settled(reads.secrets)  # first: a rotated secret needs no look
    if secrets is None or secrets_digest(secrets) != record.secrets:
        await reads.settle()
        return FirstAnswer("the secrets could not be checked or changed", secrets)
    looking = asyncio.ensure_future(session.look({n: Look(p.look()) for n, p in record.nodes.items()}))
    try:
        await session.answered(record.nodes, unless=looking)
        reads.start_rest()  # the registry, the hub, Consul: beside the looks' commands (Reads says why)
        states = await looking
    except SwarmError as exc:  # the plan looks again, and says what went wrong
        await reads.settle()
        return FirstAnswer(f"a node's look failed: {exc.message}", secrets)
    finally:  # interrupted while waiting for the answers: no look goes on behind the session's close
        looking.cancel()
    commits = await settled(reads.branches)
    why = (_difference(record, states, session) or _moved(record, await settled(reads.images))
           or _moved_branch(record, commits))
    held = await settled(reads.consul)
    if why is None and (held is None or not consul_matches(record.consul, states, held)):
        why = "Consul does not hold every registration"
    if why is not None:
        return FirstAnswer(why, secrets)
    unheard = sorted(k for k in record.weights if (commits or {}).get(k) is None)
    if unheard:  # said once, as the full plan says it (models/resolve.Resolution.note)
        bus.emit("models", "info", message=f"the hub did not say which commit {', '.join(unheard)} names now "
                                           "(no answer): each node keeps serving the commit it has; no change for them")
    bus.emit("run", "unchanged", message="nothing to change: every node runs what is wanted")
    return FirstAnswer("unchanged", secrets, DeployResult(
        phases=tuple(record.phases), unchanged=sorted(states), skipped=dict(session.skipped),
        releases={n: s.current_id or "" for n, s in states.items()}, stats=dict(session.fleet.stats())))


def _difference(record: PlanRecord, states: Mapping[str, NodeState], session: Session) -> str | None:
    for name, plan in record.nodes.items():
        state = states.get(name)
        if state is None:
            if name in session.skipped:  # an optional node that is off: skipped, as the full plan would
                continue
            return f"{name} did not answer"
        if state.lock.taken or state.lock.error:
            return f"{name} runs something else"
        if not state.infra_ready:
            return f"{name} lacks its infrastructure"
        stopped = [s for s in plan.services if not state.is_running(s, plan.project)]
        if stopped:
            return f"{name}: {', '.join(stopped)} not running"
    return None


def _moved(record: PlanRecord, heads: Mapping[str, str | None] | None) -> str | None:
    """A tag that names another digest than the nodes run (an unreachable registry: no verdict)."""
    moved = [ref for ref, digest in record.images.items() if (heads or {}).get(ref) not in (None, digest)]
    return f"the tag of {moved[0]} names another image now" if moved else None


def _moved_branch(record: PlanRecord, commits: Mapping[str, str | None] | None) -> str | None:
    """A weights branch that names another commit than the nodes serve (an unreachable hub: no verdict)."""
    moved = [key for key, commit in record.weights.items() if (commits or {}).get(key) not in (None, commit)]
    return f"{moved[0]} names another commit now (or the hub would not say)" if moved else None
