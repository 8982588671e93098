"""Per-client API keys for LiteLLM backup-router without its database. Rendered by swarm.

LiteLLM's custom auth hook (general_settings.custom_auth) calls `user_api_key_auth` for
every request, before LiteLLM looks at its public routes, so the public routes of
config.yaml (health, metrics) are let through here. It admits the master key (an admin, as
LiteLLM itself would) and each client whose key hashes (SHA-256) to an entry of
client_keys.json; anything else is refused (401). Only hashes are on disk: the keys stay
with the clients.
"""

import hashlib
import hmac
import json
import os
from pathlib import Path

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth

_CLIENTS = json.loads((Path(__file__).parent / "client_keys.json").read_text())
_PUBLIC = frozenset(["/health/liveliness", "/health/readiness", "/metrics"])


def _refuse(message: str) -> ProxyException:
    return ProxyException(message=message, type="auth_error", param="api_key", code=401)


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if request.url.path in _PUBLIC:
        return UserAPIKeyAuth(user_role=LitellmUserRoles.INTERNAL_USER_VIEW_ONLY)
    key = api_key or ""
    master = os.environ.get("LITELLM_MASTER_KEY", "")
    if master and hmac.compare_digest(key, master):
        return UserAPIKeyAuth(api_key=key, user_role=LitellmUserRoles.PROXY_ADMIN)
    digest = hashlib.sha256(key.encode()).hexdigest()
    for name, expected in _CLIENTS.items():
        if hmac.compare_digest(digest, str(expected).lower()):
            return UserAPIKeyAuth(api_key=digest, key_alias=name, user_id=name)
    raise _refuse("Authentication Error: unknown API key")
