"""Which commit a moving weights revision (`main`) names now, for the no-op fast path: stdlib only.

A deploy's first question (engine/first.py) must see a branch that moved as the full plan does
(models/resolve.py, through huggingface_hub), without importing huggingface_hub (0.2-0.34 s):
`hub_commits` asks the hub's model-info endpoint, `GET <hub>/api/models/<repo>/revision/<rev>`
(the call `HfApi.model_info` makes), for every revision at once in threads, and answers its `sha`
— None where the hub could not be reached (no verdict: an unreachable hub never fails a no-op),
"" where it answered without one (a private or gated repository, a removed branch: the full plan
asks with the token and says what is wrong).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote


def hub_commits(endpoint: str, keys: Iterable[str], timeout: float = 5.0) -> dict[str, str | None]:
    """`repo@revision` -> the commit it names now (run it in a thread: it blocks)."""
    keys = list(keys)
    if not keys:
        return {}
    import urllib.request  # in the caller's thread (see clients/tags.py: ~13 ms with ssl)

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with ThreadPoolExecutor(max_workers=min(8, len(keys))) as pool:
        found = list(pool.map(lambda k: _one(opener, endpoint.rstrip("/"), k, timeout), keys))
    return dict(zip(keys, found, strict=True))


def _one(opener: Any, endpoint: str, key: str, timeout: float) -> str | None:
    import urllib.error

    repo, _, revision = key.partition("@")
    url = f"{endpoint}/api/models/{quote(repo)}/revision/{quote(revision, safe='')}"
    try:
        with opener.open(url, timeout=timeout) as reply:
            sha = json.loads(reply.read(1 << 20)).get("sha")
    except urllib.error.HTTPError:
        return ""
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) else ""
