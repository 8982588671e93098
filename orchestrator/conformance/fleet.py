"""Cross-node checks from the controller: Consul, HAProxy's vLLM pool, LiteLLM routing.

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

from orchestrator.render.services import Service
from orchestrator.secrets import Secret

POOL_BACKEND = "vllm_pool"
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


def pool_problems(rows: Sequence[StatsRow], expected: Iterable[str]) -> list[str]:
    """Every vLLM instance is a server of the pool and UP; nothing else is in it."""
    servers = {r.server: r.status for r in rows
               if r.proxy == POOL_BACKEND and r.server not in {"FRONTEND", "BACKEND"}}
    if not any(r.proxy == POOL_BACKEND for r in rows):
        return [f"HAProxy has no backend {POOL_BACKEND}"]
    want = set(expected)
    problems = [f"{name} is not a server of {POOL_BACKEND}" for name in sorted(want - set(servers))]
    problems += [f"{POOL_BACKEND} server {name} is {status}" for name, status in sorted(servers.items())
                 if name in want and not status.startswith("UP")]
    problems += [f"{POOL_BACKEND} has server {name}, which is no vLLM of the playbook"
                 for name in sorted(set(servers) - want)]
    return problems


def service_url(svc: Service, port_var: str | None = None) -> str:
    port = int(svc.vars[port_var]) if port_var else svc.ports[0].port
    return f"http://{svc.address}:{port}"


def fetch_stats(haproxy: Service) -> str:
    url = service_url(haproxy, "stats_port") + "/stats;csv"
    response = httpx.get(url, timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    return response.text


def liveliness_problems(litellm: Service) -> list[str]:
    url = service_url(litellm) + "/health/liveliness"
    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        return [f"GET {url}: {type(exc).__name__}: {exc}"]
    return [] if response.status_code == 200 else [f"GET {url} answered {response.status_code}"]


def chat(litellm: Service, master_key: Secret, model: str) -> httpx.Response:
    url = service_url(litellm) + "/v1/chat/completions"
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
    bases = {f"{v.address}:{v.ports[0].port}" for v in vllms if v.ports}
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
