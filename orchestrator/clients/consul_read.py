"""What Consul's agent holds, read without py-consul, and the one rule for the ACL token.

`ConsulAccess` is the inventory's `consul:` block (address, token file or variable, CA,
client certificate). The token, first match wins: the inventory's `consul.token_file`
(refused when the group or others may read it), then the variable `consul.token_env`
names (`CONSUL_HTTP_TOKEN` by default), else none (the agent's anonymous token).
`ConsulClient.from_inventory` (py-consul, for registering) takes its token from here too.

`agent_services(access)` is one GET of `/v1/agent/services`: the registrations the no-op
check compares with what the last run left (~14 ms to import, where py-consul's
`requests` costs ~60 ms; see clients/http.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.clients.http import Tls, request
from orchestrator.clients.vault_kv import read_private
from orchestrator.errors import ServiceError
from orchestrator.secrets import Secret


@dataclass(frozen=True)
class ConsulAccess:
    addr: str
    token_file: Path | None = None
    token_env: str = "CONSUL_HTTP_TOKEN"
    tls: Tls = Tls()


def consul_token(access: ConsulAccess, env: Mapping[str, str] | None = None) -> Secret | None:
    """The ACL token, by the rule in the module docstring."""
    env = os.environ if env is None else env
    if access.token_file is not None:
        return Secret(read_private(access.token_file, "Consul ACL token"), "consul-token")
    value = env.get(access.token_env)
    return Secret(value, "consul-token") if value else None


def agent_services(access: ConsulAccess, timeout: float = 10.0) -> dict[str, Any]:
    """The agent's registrations: service id -> its definition."""
    token = consul_token(access)
    headers = {"X-Consul-Token": token.reveal()} if token is not None else {}
    try:
        answer = request("GET", access.addr, "/v1/agent/services", headers=headers, tls=access.tls,
                         timeout=timeout)
    except OSError as exc:
        raise ServiceError(f"Consul at {access.addr} is unreachable ({type(exc).__name__}) while trying to "
                           "read its registrations") from None
    data = answer.json()
    if answer.status != 200 or not isinstance(data, dict):
        raise ServiceError(f"Consul at {access.addr}: reading its registrations failed (HTTP {answer.status})")
    return data
