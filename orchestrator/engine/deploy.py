"""`swarm deploy`: where every deploy starts, and the runbook it follows.

    the plan record vouches for the inputs? (engine/record.py)
      -> the recorded optional nodes are dialled at once (transport/dial.py): their connect
         window runs while the SSH library loads
      -> the first question (engine/first.py), over a session on the recorded nodes
         (engine/session.py): connect, and meanwhile read the secrets; lock, then look —
         one command per node
      -> nothing differs: done (one connection and one command per node)
    otherwise, with the same session when there is one (engine/runbook.py):
      -> load the project; select once (phases, nodes, rendered services)
      -> finish a cut-off unwind on these nodes first
      -> connect + secrets, lock then look (with the preflight facts where a node locks)
      -> plan every phase from what was read under the lock; nothing to do? done
      -> preflight on the nodes about to change
      -> per phase: [stage] -> apply -> gate -> Consul -> switch (runner.py unwinds a
         phase that fails or is interrupted; earlier phases stay on their new releases)
      -> remember the plan (the next run's record); unlock on every path.

This module imports only what loading the record needs; the first question (asyncssh) loads
after the dial, and a no-op deploy never loads the validation models, the template engine or
the HTTP clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.engine.context import DeployRequest, DeployResult, whoami
from orchestrator.engine.record import PlanCache, PlanRecord, inputs_digest
from orchestrator.engine.signals import Interrupts
from orchestrator.events import EventBus
from orchestrator.paths import local_state_dir
from orchestrator.transport.dial import Dial, dial_early

if TYPE_CHECKING:
    from orchestrator.engine.first import FirstAnswer
    from orchestrator.engine.session import Session


async def deploy(request: DeployRequest, bus: EventBus, interrupts: Interrupts,
                 cache: PlanCache | None = None) -> DeployResult:
    """The first question when a plan record can answer it, then (if needed) the runbook."""
    request.by = request.by or whoami()
    cache = cache or PlanCache()
    key = None if request.check or pending_exists() else request_key(request)
    record = cache.load(key, request.inventory) if key else None
    if record is None:
        return await plan_and_run(request, bus, interrupts, cache=cache, key=key)
    dials = dial_optional(record)
    # The reads beside the looks are not started before this import: their threads slowed it
    # by more than they gained (measured 2026-12-06); they start with the connects.
    # After the dial: the session's SSH library is ~0.1 s of imports on this machine (python
    # -X importtime, 2026-12-06) that the optional nodes' connect windows now run beside.
    from orchestrator.engine.first import first_question, session_of

    async with session_of(record, request, bus, dials) as session:
        first = await first_question(record, session, bus)
        if first.noop:
            assert first.result is not None
            return first.result
        bus.emit("run", "info", message=f"the last plan does not hold ({first.why}): planning anew")
        return await plan_and_run(request, bus, interrupts, session=session, first=first, cache=cache, key=key)


def request_key(request: DeployRequest) -> str:
    """The plan record's key for this command: the files it depends on and its arguments."""
    return inputs_digest(request.root, request.inventory, request.playbook, request.key_args())


def dial_optional(record: PlanRecord) -> dict[str, Dial]:
    """Start the TCP connect of every recorded optional node now (its window counts from here)."""
    dials = {}
    for name, node in record.nodes.items():
        target = node.target
        if target.get("answer_window") is not None:
            attempt = dial_early(str(target["address"]), int(target.get("port") or 22))
            if attempt is not None:
                dials[name] = attempt
    return dials


async def plan_and_run(request: DeployRequest, bus: EventBus, interrupts: Interrupts, *,
                       session: Session | None = None, first: FirstAnswer | None = None,
                       cache: PlanCache | None = None, key: str | None = None) -> DeployResult:
    """The runbook, over `session` when the first question opened one."""
    # The runbook loads the project and renders it: pydantic, jinja2, yaml, the HTTP clients
    # — 0.21 s of imports on this machine (python -X importtime, 2026-12-06) that a no-op
    # deploy, answered by the plan record, never pays.
    from orchestrator.engine.runbook import run_deploy

    return await run_deploy(request, bus, interrupts, session=session, first=first, cache=cache, key=key)


def pending_exists() -> bool:
    """An unwind was cut off on this controller: the full runbook finishes it first."""
    return any(local_state_dir().glob("pending-unwind-*.json"))
