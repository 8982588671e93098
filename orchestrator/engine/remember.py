"""What a full deploy leaves for the next one: the plan record of exactly what it asked.

`plan_record` writes down, from the run's selection, session and looks: per node its SSH
target, the `service hash` lines and directories its look expected and the services that
must run; where the secrets came from (Vault paths, never values: a digest of them) and
which Consul registrations the run left. engine/record.py loads it; engine/first.py asks the question.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.clients.http import Tls
from orchestrator.clients.secrets_source import SecretSource
from orchestrator.engine.consul import ConsulSync, registration
from orchestrator.engine.record import (
    NodePlan,
    PlanRecord,
    RecordedConsul,
    RecordedVault,
    expected_registration,
    secrets_digest,
)
from orchestrator.engine.selection import Selection
from orchestrator.engine.session import Session
from orchestrator.facts.node import LookRequest
from orchestrator.secrets import Secret
from orchestrator.transport.ssh import target_for


def plan_record(key: str, session: Session, sel: Selection, requests: Mapping[str, LookRequest],
                secrets: Mapping[str, Secret], source: SecretSource, consul: ConsulSync) -> PlanRecord:
    """The record of a run over `sel` (the whole selection: an optional node that was off too),
    whose looks asked `requests`."""
    inventory, nodes = sel.project.inventory, {}
    for node in sel.nodes:
        request = requests[node.name]
        nodes[node.name] = NodePlan(
            target=target_for(inventory, node, optional=sel.is_optional(node.name)).as_record(),
            deploy_root=node.deploy_root, project=node.project, expected=list(request.expected),
            directories=list(request.directories), network=request.network, docker=request.docker,
            services=[s.name for p in sel.phases_of(node.name) for s in sel.services_of(p.id, node.name)
                      if not s.protected], optional=sel.is_optional(node.name))
    return PlanRecord(key=key, phases=list(sel.phase_ids), holder_phases=list(session.ctx.phases), nodes=nodes,
                      vault=recorded_vault(source, secrets), secrets=secrets_digest(secrets),
                      consul=recorded_consul(consul, session, sel))


def recorded_vault(source: SecretSource, secrets: Mapping[str, Secret]) -> RecordedVault | None:
    if not secrets:
        return None
    access = source.access
    return RecordedVault(addr=access.addr, mount=access.mount,
                         paths={n: list(p) for n, p in source.paths(set(secrets)).items()},
                         token_file=str(access.token_file) if access.token_file else None,
                         ca_cert=_ca(access.tls), client_cert=_cert(access.tls))


def recorded_consul(consul: ConsulSync, session: Session, sel: Selection) -> RecordedConsul | None:
    if consul.addr is None:
        return None
    access = consul.access()
    expected = {}
    for svc in sel.selected_services():
        state = session.states.get(svc.node)
        if svc.consul is not None and state is not None and svc.name in state.applied:
            payload = registration(svc, state.current_id or "", sel.project.inventory.fleet,
                                   consul.agent).to_payload()
            expected[payload["ID"]] = expected_registration(payload, svc.node)
    return RecordedConsul(addr=access.addr, token_file=str(access.token_file) if access.token_file else None,
                          token_env=access.token_env, expected=expected, ca_cert=_ca(access.tls),
                          client_cert=_cert(access.tls))


def _ca(tls: Tls) -> str | None:
    return str(tls.ca_cert) if tls.ca_cert else None


def _cert(tls: Tls) -> list[str] | None:
    return [str(tls.client_cert[0]), str(tls.client_cert[1])] if tls.client_cert else None
