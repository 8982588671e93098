"""Answers recorded from the lab (tests/unit/fixtures/lab/*.yml, see record.py there).

Tests that replay a node take its recorded answers and change only what the case is about
(a container restarting, a lock held, a file missing), so the formats stay docker's and
the shell's own.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from orchestrator.transport.replay import Answer

FIXTURES = Path(__file__).parent / "fixtures" / "lab"
FIELDS = ("service", "id", "status", "restarting", "restarts", "started", "exit_code", "health", "created")


@cache
def recorded(node: str) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load((FIXTURES / f"{node}.yml").read_text())
    return data


def answer(node: str, name: str) -> Answer:
    entry = recorded(node)[name]
    return Answer(entry["exit"], entry["stdout"], "")


def state_rows(node: str) -> dict[str, dict[str, str]]:
    """The recorded container-states rows of a node, by service."""
    rows = {}
    for line in recorded(node)["container-states"]["stdout"].splitlines():
        parts = dict(zip(FIELDS, line.split("\t"), strict=True))
        rows[parts["service"]] = parts
    return rows


def states(node: str, **changes: dict[str, str] | None) -> Answer:
    """container-states as recorded, with some services changed (a dict of fields) or gone (None)."""
    rows = state_rows(node)
    for service, change in changes.items():
        service = service.replace("_", "-")
        if change is None:
            rows.pop(service, None)
            continue
        base = rows.get(service) or {**next(iter(rows.values())), "service": service,
                                     "id": f"{service}0".ljust(64, "0")}
        rows[service] = {**base, **change}
    return Answer(0, "".join("\t".join(r[f] for f in FIELDS) + "\n" for r in rows.values()))


def release_record(node: str) -> dict[str, Any]:
    text = recorded(node)["read-file current/release.json"]["stdout"]
    return dict(json.loads(text.split("\n", 1)[1]))


def docker_ps(node: str) -> str:
    return str(recorded(node)["docker-ps"]["stdout"])
