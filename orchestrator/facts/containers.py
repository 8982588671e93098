"""What docker says of a node's containers: `docker ps` rows (labels, published ports) and the
gate's per-round container states (state, restarts, start time, compose health)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.commands import CONTAINER_FIELDS

_PUBLISHED_RE = re.compile(r":(\d+)(?:-(\d+))?->")


def parse_containers(stdout: str) -> tuple[dict[str, Any], ...]:
    """One JSON object per line; anything else is skipped."""
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return tuple(out)


def label(container: Mapping[str, Any], key: str) -> str | None:
    """A label's value: docker ps gives `a=1,b=2` text, the SDK a dict."""
    labels = container.get("Labels", "")
    if isinstance(labels, dict):
        value = labels.get(key)
        return str(value) if value is not None else None
    for pair in str(labels).split(","):
        name, sep, value = pair.partition("=")
        if sep and name == key:
            return value
    return None


def published_ports(container: Mapping[str, Any]) -> set[int]:
    """Host ports in `docker ps` Ports text: `0.0.0.0:8000->8000/tcp, [::]:8000->...`;
    docker writes consecutive ports as a range: `0.0.0.0:6333-6334->6333-6334/tcp`."""
    ports: set[int] = set()
    for first, last in _PUBLISHED_RE.findall(str(container.get("Ports", ""))):
        ports.update(range(int(first), int(last or first) + 1))
    return ports


@dataclass(frozen=True)
class ContainerState:
    """One container as `commands.container_states` prints it."""

    service: str
    id: str
    status: str
    restarting: bool
    restarts: int
    started: str
    exit_code: int
    health: str
    created: float | None

    @property
    def short_id(self) -> str:
        return self.id[:12]


def parse_container_states(stdout: str) -> dict[str, ContainerState]:
    """service -> its container (the newest when compose left two behind)."""
    out: dict[str, ContainerState] = {}
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != len(CONTAINER_FIELDS) or not parts[0]:
            continue
        state = ContainerState(service=parts[0], id=parts[1], status=parts[2],
                               restarting=parts[3] == "true", restarts=_int(parts[4]),
                               started=parts[5], exit_code=_int(parts[6]), health=parts[7],
                               created=docker_time(parts[8]))
        known = out.get(state.service)
        if known is None or (state.created or 0) >= (known.created or 0):
            out[state.service] = state
    return out


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def docker_time(text: str) -> float | None:
    """docker's RFC 3339 with nanoseconds (`2026-12-01T19:46:32.123456789Z`) -> epoch seconds."""
    text = text.strip()
    if not text or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    digits = "".join(c for c in frac if c.isdigit())
    return stamp + (float(f"0.{digits}") if digits else 0.0)
