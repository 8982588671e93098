"""What docker says of a node's containers: `docker ps` rows (labels, published ports). The
gate's per-round container states are in facts/states.py."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

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
