"""The front door's models: one HAProxy backend per served model, every instance serving it.

HAProxy (roles/haproxy) is the one way in to every model server. Requests are routed by the
model they name — the JSON body's `model` on `/pool/v1/...`, or the model's own path
`/models/<slug>/v1/...` — to the backend of that model, which holds every instance serving
it across nodes (a `backup` tier instance only takes requests when the others cannot).
LiteLLM's `api_base` for a model is that model's path on HAProxy's internal listener, so one
runtime command (`set server <backend>/<instance> state drain`) takes an instance out of both
paths. This module computes that table for the templates (`fleet.models`), with every value
HAProxy will read already in the form its config needs: names checked against what HAProxy
accepts, strings quoted for its parser (`haproxy_quoted`), JSON bodies prepared for
`http-request return`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.errors import InputError

MODEL_ROLES = ("vllm",)
_NAME_OK = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def slug_of(model: str) -> str:
    """A served model name as one path segment and HAProxy name: `org/name` -> `org--name`."""
    slug = model.replace("/", "--")
    if not _NAME_OK.fullmatch(slug):
        raise InputError(f"served model name {model!r} cannot name an HAProxy backend: "
                         "use letters, digits and . _ - : /")
    return slug


def backend_of(model: str) -> str:
    return f"model_{slug_of(model)}"


def haproxy_quoted(value: str) -> str:
    """One HAProxy config argument: single-quoted, where HAProxy interprets nothing
    (no escapes, no environment variables). A value it cannot carry is refused."""
    bad = next((c for c in value if c == "'" or ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise InputError(f"{value[:60]!r} cannot be written into haproxy.cfg: it holds {bad!r}")
    return f"'{value}'"


def models(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per served model (sorted by name): its slug, backend, and instances (sorted by name)."""
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        if item.get("role") in MODEL_ROLES:
            model = str((item.get("vars") or {}).get("served_model_name") or "")
            if model:
                by_model.setdefault(model, []).append(item)
    out = [_model(name, sorted(group, key=lambda i: str(i["name"]))) for name, group in sorted(by_model.items())]
    _refuse_clashes(out)
    return out


def _model(name: str, group: list[Mapping[str, Any]]) -> dict[str, Any]:
    instances = [{"name": str(i["name"]), "node": i.get("node"), "address": i.get("address"),
                  "port": i.get("port"), "backup": (i.get("vars") or {}).get("tier") == "backup"}
                 for i in group]
    for instance in instances:
        if not _NAME_OK.fullmatch(str(instance["name"])):
            raise InputError(f"service name {instance['name']!r} cannot name an HAProxy server")
    return {"name": name, "slug": slug_of(name), "backend": backend_of(name), "quoted": haproxy_quoted(name),
            "instances": instances}


def _refuse_clashes(found: list[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for model in found:
        other = seen.setdefault(model["slug"], model["name"])
        if other != model["name"]:
            raise InputError(f"served model names {other!r} and {model['name']!r} give the same front-door "
                             f"path /models/{model['slug']}/: rename one (served_model_name)")


def catalogue(found: list[dict[str, Any]]) -> dict[str, str]:
    """The bodies HAProxy answers itself, quoted for `http-request return ... string/lf-string`."""
    names = [m["name"] for m in found]
    listing = {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "swarm"} for n in names]}
    served = ", ".join(names) or "none"
    missing = {"error": {"message": f"model %[var(txn.model),json(utf8s)] is not served by this fleet; "
                                    f"it serves: {served}", "type": "NotFoundError", "code": 404}}
    held = {"error": {"message": "every instance of this model is being replaced or is down; "
                                 "retry after the time in Retry-After", "type": "ServiceUnavailable",
                      "code": 503}}
    too_big = {"error": {"message": "request body too large to read the model from: name the model "
                                    "in the path instead, /models/<model>/v1/...", "type": "BadRequest",
                         "code": 413}}
    return {"models": haproxy_quoted(json.dumps(listing, separators=(",", ":"))),
            "not_served": haproxy_quoted(json.dumps(missing, separators=(",", ":"))),
            "held": haproxy_quoted(json.dumps(held, separators=(",", ":"))),
            "too_big": haproxy_quoted(json.dumps(too_big, separators=(",", ":"))),
            "paths": ", ".join(f"/models/{m['slug']}/v1" for m in found) or "none"}


def routers(services: Iterable[Any]) -> list[dict[str, str]]:
    """The fleet's model routers (LiteLLM) by node and IP address: the front door lets them
    reach each model by its path (their config's api_base) whether `allowed_ips` lists them
    or not. One named by a host name cannot be matched by source address: `allowed_ips`
    must cover it, as a tailnet's range does."""
    seen = {(s.node, s.address) for s in services if s.role == "litellm" and _is_ip(s.address)}
    return [{"node": node, "address": address} for node, address in sorted(seen)]


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return "%" not in value
