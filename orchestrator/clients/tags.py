"""What a tag names now, for the no-op fast path: one registry HEAD per image, stdlib only.

A deploy's first question (engine/first.py) must see a moved tag as the full plan does (render/pins.py),
without loading httpx: `head_digests` HEADs every image's manifest at once in threads, with an
anonymous bearer token when the registry asks for one (Docker Hub, GHCR), and answers the
`Docker-Content-Digest` per image — None where the registry could not say (then the fast path
compares nothing for that image: an unreachable registry never fails a no-op).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

ACCEPT = ", ".join(("application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json"))
_PARAM = re.compile(r'(\w+)="([^"]*)"')


def head_digests(refs: Iterable[str], insecure: Iterable[str] = (), timeout: float = 5.0) -> dict[str, str | None]:
    """Every image's digest at once (run it in a thread: it blocks)."""
    refs = list(refs)
    plain = set(insecure)
    if not refs:
        return {}
    # Here, in the caller's thread, not at import: urllib.request (with ssl) and the image-ref parser
    # cost 13 ms to import (measured, python -X importtime), which the fast path's SSH connects
    # would otherwise wait for.
    import urllib.request

    from orchestrator.clients.images import parse_image_ref

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with ThreadPoolExecutor(max_workers=min(16, len(refs))) as pool:
        found = list(pool.map(lambda r: _one(opener, parse_image_ref(r), r.split("/", 1)[0] in plain, timeout),
                              refs))
    return dict(zip(refs, found, strict=True))


def head_digest(ref: str, insecure: bool, timeout: float = 5.0) -> str | None:
    return head_digests([ref], [ref.split("/", 1)[0]] if insecure else [], timeout)[ref]


def _one(opener: Any, image: Any, insecure: bool, timeout: float) -> str | None:
    url = f"{'http' if insecure else 'https'}://{image.api_host}/v2/{image.repository}/manifests/{image.reference}"
    status, headers = _head(opener, url, {"Accept": ACCEPT}, timeout)
    if status == 401 and headers.get("Www-Authenticate", "").lower().startswith("bearer"):
        token = _token(opener, headers["Www-Authenticate"], image.repository, timeout)
        if token:
            status, headers = _head(opener, url, {"Accept": ACCEPT, "Authorization": f"Bearer {token}"}, timeout)
    digest = headers.get("Docker-Content-Digest", "")
    return digest if status == 200 and digest.startswith("sha256:") else None


def _head(opener: Any, url: str, headers: dict[str, str], timeout: float) -> tuple[int, dict[str, str]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="HEAD", headers=headers)
    try:
        with opener.open(request, timeout=timeout) as reply:
            return int(reply.status), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)
    except (OSError, ValueError):
        return 0, {}


def _token(opener: Any, challenge: str, repository: str, timeout: float) -> str | None:
    params = dict(_PARAM.findall(challenge))
    if not params.get("realm", "").startswith("https://"):
        return None
    query = {"scope": params.get("scope") or f"repository:{repository}:pull"}
    if params.get("service"):
        query["service"] = params["service"]
    try:
        with opener.open(f"{params['realm']}?{urllib.parse.urlencode(query)}", timeout=timeout) as reply:
            body = json.loads(reply.read())
    except (OSError, ValueError):
        return None
    token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
    return token if isinstance(token, str) else None
