"""Protected services (the existing Qdrant): the container seen at the last verify, kept locally.

`verify-protected.json` under `$SWARM_STATE_DIR` (default `~/.local/state/swarm`) maps
`<node>@<address>/<service>` to the container ID and creation time seen last. Each verify
compares, then records what it saw: a recreate is reported by the first verify after it
("since the last verify"), and the next one accepts the new container as the baseline.
Writers take an flock, since xdist workers verify different nodes at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.paths import local_state_dir

STATE_FILE = "verify-protected.json"


@dataclass(frozen=True)
class Seen:
    container_id: str
    created: str


def state_path() -> Path:
    return local_state_dir() / STATE_FILE


def record_key(node: str, address: str, service: str) -> str:
    return f"{node}@{address}/{service}"


def seen_from(container: Mapping[str, Any]) -> Seen:
    return Seen(container_id=str(container.get("Id", "")), created=str(container.get("Created", "")))


def recreate_problems(service: str, before: Seen | None, now: Seen) -> list[str]:
    if before is None or before == now:
        return []
    return [f"{service} was recreated since the last verify: container {before.container_id[:12]} "
            f"(created {before.created}) is now {now.container_id[:12]} (created {now.created})"]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def swap(key: str, now: Seen, path: Path | None = None) -> Seen | None:
    """Record `now` under `key` and return what was recorded before (None: first verify)."""
    path = path or state_path()
    with _locked(path):
        data = _load(path)
        old = data.get(key)
        data[key] = asdict(now)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    if isinstance(old, dict) and "container_id" in old:
        return Seen(str(old["container_id"]), str(old.get("created", "")))
    return None
