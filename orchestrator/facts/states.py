"""The gate's per-round container states: `commands.container_states` rows (state, restarts,
start time, compose health). Apart from the `docker ps` rows (facts/containers.py): a deploy that
changes nothing never reads them, and they cost it 2 ms of imports (datetime, a dataclass)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.commands import CONTAINER_FIELDS


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
