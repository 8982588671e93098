"""Cross-node checks from the controller: Consul, the front door's model backends, LiteLLM routing.

Pure parsers and judges (`consul_problems`, `parse_haproxy_csv`, `pool_problems`,
`chat_problems`) plus thin HTTP helpers; the LiteLLM master key is a `Secret` revealed
only into the request header.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator.addresses import host_port, http_url
from orchestrator.render.frontdoor import backend_of
from orchestrator.render.services import LOOPBACK, Service
from orchestrator.secrets import Secret

HTTP_TIMEOUT = 10.0
CHAT_TIMEOUT = 60.0


def consul_problems(service: str, statuses: Mapping[str, str], phase: int | None = None) -> list[str]:
    status = statuses.get(service)
    if status is None:
        how = f" (a deploy of phase {phase} registers it)" if phase is not None else ""
        return [f"{service} is not registered in Consul{how}"]
    if status != "passing":
        return [f"{service} is {status} in Consul"]
    return []


@dataclass(frozen=True)
class StatsRow:
    proxy: str
    server: str
    status: str


def parse_haproxy_csv(text: str) -> list[StatsRow]:
    """HAProxy's `stats;csv`: a `# pxname,svname,...` header, then one row per proxy/server."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not HAProxy stats CSV (no '# pxname,svname,...' header)")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    return [StatsRow(r.get("pxname", ""), r.get("svname", ""), r.get("status", "")) for r in reader]


def pool_problems(rows: Sequence[StatsRow], expected: Mapping[str, str]) -> list[str]:
    """Every vLLM instance is a server of its model's backend (`expected`: instance -> backend)
    and UP; no model backend holds anything else."""
    backends = set(expected.values())
    servers = {(r.proxy, r.server): r.status for r in rows
               if r.proxy in backends and r.server not in {"FRONTEND", "BACKEND"}}
    problems = [f"HAProxy has no backend {b}" for b in sorted(backends - {r.proxy for r in rows})]
    for name, backend in sorted(expected.items()):
        status = servers.get((backend, name))
        if status is None:
            problems.append(f"{name} is not a server of {backend}")
        elif not status.startswith("UP"):
            problems.append(f"{backend} server {name} is {status}")
    problems += [f"{b} has server {s}, which is no vLLM of the playbook serving that model"
                 for (b, s) in sorted(servers) if expected.get(s) != b]
    return problems


def model_backends(vllms: Sequence[Service]) -> dict[str, str]:
    """Each vLLM instance -> the front door's backend of the model it serves."""
    return {v.name: backend_of(str(v.vars.get("served_model_name") or "")) for v in vllms}


def service_url(svc: Service, port_var: str | None = None) -> str:
    port = int(svc.vars[port_var]) if port_var else svc.ports[0].port
    return http_url(svc.address, port)


def in_container_get(host: Any, svc: Service, port: int, path: str) -> str:
    """GET http://127.0.0.1:<port><path> inside the service's container on its node (`host`: the
    node's testinfra host): what the node itself sees of a port published on its loopback only."""
    ids = host.check_output("docker ps -q --filter %s --filter %s",
                            f"label=com.docker.compose.project=swarm-{svc.node}",
                            f"label=com.docker.compose.service={svc.name}").split()
    if not ids:
        raise ValueError(f"{svc.name} is not running on {svc.node}")
    return str(host.check_output("docker exec %s wget -q -O - %s", ids[0], f"http://127.0.0.1:{port}{path}"))


def fetch_stats(haproxy: Service, host: Any = None) -> str:
    """HAProxy's stats CSV: from the controller, or — its stats port published on the node's
    loopback only — from inside its container on the node (`host`: the node's testinfra host)."""
    port = int(haproxy.vars["stats_port"])
    if host is not None and any(p.port == port and p.host_ip == LOOPBACK for p in haproxy.ports):
        return in_container_get(host, haproxy, 8888, "/stats;csv")
    url = service_url(haproxy, "stats_port") + "/stats;csv"
    response = httpx.get(url, timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    return response.text


def litellm_base(litellm: Service, doors: Sequence[Service]) -> str:
    """Where the controller reaches LiteLLM: its own port, or — published on its node's
    loopback only — the front door on that node (its API paths go to LiteLLM)."""
    door = next((d for d in doors if d.node == litellm.node), None)
    if door is not None and litellm.ports and all(p.host_ip == LOOPBACK for p in litellm.ports):
        return service_url(door, "http_port")
    return service_url(litellm)


def liveliness_problems(litellm: Service, base: str | None = None) -> list[str]:
    url = (base or service_url(litellm)) + "/health/liveliness"
    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        return [f"GET {url}: {type(exc).__name__}: {exc}"]
    return [] if response.status_code == 200 else [f"GET {url} answered {response.status_code}"]


def chat(litellm: Service, master_key: Secret, model: str, base: str | None = None) -> httpx.Response:
    url = (base or service_url(litellm)) + "/v1/chat/completions"
    body = {"model": model, "max_tokens": 8,
            "messages": [{"role": "user", "content": "swarm verify: reply with one word"}]}
    return httpx.post(url, json=body, timeout=CHAT_TIMEOUT,
                      headers={"Authorization": f"Bearer {master_key.reveal()}"})


def chat_problems(status: int, body: Mapping[str, Any] | None, headers: Mapping[str, str],
                  vllms: Sequence[Service]) -> list[str]:
    """A 200 with a choice, answered by one of the playbook's vLLM instances."""
    if status != 200:
        return [f"chat completion answered HTTP {status}"]
    if not body or not body.get("choices"):
        return ["chat completion answered without choices"]
    served = {str(v.vars.get("served_model_name", "")) for v in vllms}
    bases = {host_port(v.address, v.ports[0].port) for v in vllms if v.ports}
    model = str(body.get("model", ""))
    api_base = headers.get("x-litellm-model-api-base", "")
    if any(model.endswith(s) for s in served if s) or any(b in api_base for b in bases):
        return []
    return [f"chat completion came from model {model!r} (api base {api_base or 'unknown'}), "
            f"not from a vLLM of the playbook ({', '.join(sorted(served))})"]


# --- the front door's client allowlist (inventory `allowed_ips`) ---------------------------------


def source_address(host: str, port: int) -> str:
    """The controller's own address on the route to host:port (what HAProxy sees as `src`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return str(probe.getsockname()[0])


def is_allowed(address: str, allowed: Iterable[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(str(a), strict=False) for a in allowed)


def allowlist_problems(status: int, client: str, allowed: Sequence[str]) -> list[str]:
    """A request to the front door's LiteLLM paths is refused (403) exactly when the client is
    outside `allowed_ips`."""
    inside = is_allowed(client, allowed)
    if inside and status == 403:
        return [f"the front door refused {client} (403), which allowed_ips ({', '.join(allowed)}) admits"]
    if not inside and status != 403:
        return [f"the front door answered {client} with {status}, but {client} is outside allowed_ips "
                f"({', '.join(allowed)}): expected 403"]
    return []


def front_door_status(haproxy: Service, path: str = "/v1/models") -> int:
    url = service_url(haproxy, "http_port") + path
    return httpx.get(url, timeout=HTTP_TIMEOUT).status_code


def chat_backends(vllms: Sequence[Service], ollamas: Sequence[Service]) -> tuple[str, list[Service]]:
    """The model a routing check asks LiteLLM for, and the services that may answer it:
    the `primary` tier of the vLLM instances, else the first model of the Ollama hosts."""
    if vllms or not ollamas:
        return "primary", list(vllms)
    first = str(list(ollamas[0].vars.get("models") or ["llama3"])[0])
    return first, [o for o in ollamas if first in list(o.vars.get("models") or [])]
