"""Where the controller reaches a service it probes: at the node's address, or — for a port
the node publishes on its loopback only (`reach: node`) — through the node's SSH connection.

Internal services (LiteLLM, Prometheus, Grafana, PostgreSQL, ...) are published on the node's
127.0.0.1 so that nothing else on the network reaches them (roles' `ports[].reach`). The gate
still probes them from the controller: over a local port forwarded by the run's own SSH
connection to the node (asyncssh's `forward_local_port`), so the probe sees what a client on
the node sees, with no tool on the node and no other connection.
"""

from __future__ import annotations

from orchestrator.render.services import LOOPBACK, Probe, Service
from orchestrator.transport.base import Transport

FORWARDED_HOST = "127.0.0.1"


def is_loopback(svc: Service, port: int | None) -> bool:
    return any(p.port == port and p.host_ip == LOOPBACK for p in svc.ports)


async def probe_target(transport: Transport, svc: Service, probe: Probe) -> tuple[str, Probe]:
    """(host, probe) to use from the controller: the service's address, or the controller's
    end of a forward to the node's loopback."""
    if not is_loopback(svc, probe.port):
        return svc.address, probe
    forward = getattr(transport, "forward_local", None)
    if forward is None:  # a transport without forwarding: the probe is refused, as it would be
        return svc.address, probe
    local = await forward(int(probe.port or 0))
    return FORWARDED_HOST, probe.model_copy(update={"port": local})
