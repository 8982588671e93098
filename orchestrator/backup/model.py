"""A backup as data: what to back up (`Target`), what was written (`Manifest`), and the
retention rule that decides which backups a node keeps.

A backup's id is the UTC time it was taken (`20261201T031500Z`); its directory is
`<deploy_root>/backups/<service>/<id>/` on the service's node, with the dump files, their
`SHA256SUMS` and `manifest.json`. The backup's checksum is the sha256 of its SHA256SUMS:
one value that covers every file, checkable by hand with `sha256sum -c SHA256SUMS`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.render.backups import Target, id_time, is_id

# ---------------------------------------------------------------- what was written


@dataclass(frozen=True)
class Manifest:
    """manifest.json of one backup (one JSON line on the node)."""

    service: str
    node: str
    method: str
    id: str
    created: float
    duration_s: float
    size: int
    checksum: str
    files: dict[str, dict[str, Any]]
    version: str
    contains_secrets: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "service": self.service, "node": self.node, "method": self.method, "id": self.id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "created": self.created, "duration_s": round(self.duration_s, 3), "size": self.size,
            "checksum": self.checksum, "files": self.files, "swarm_version": self.version,
            "contains_secrets": self.contains_secrets, "details": self.details,
        }, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest | None:
        try:
            data = json.loads(text)
            return cls(service=str(data["service"]), node=str(data["node"]), method=str(data["method"]),
                       id=str(data["id"]), created=float(data["created"]),
                       duration_s=float(data.get("duration_s", 0.0)), size=int(data["size"]),
                       checksum=str(data["checksum"]), files=dict(data.get("files", {})),
                       version=str(data.get("swarm_version", "?")),
                       contains_secrets=bool(data.get("contains_secrets", False)),
                       details=dict(data.get("details", {})))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


@dataclass(frozen=True)
class Listed:
    """One complete backup a node holds (its manifest, None when unreadable)."""

    service: str
    id: str
    manifest: Manifest | None

    @property
    def created(self) -> float:
        return self.manifest.created if self.manifest is not None else id_time(self.id)


@dataclass(frozen=True)
class Listing:
    """What `list_backups` found on one node: its clock and the backups per service."""

    now: float
    backups: dict[str, tuple[Listed, ...]]

    def of(self, service: str) -> tuple[Listed, ...]:
        return self.backups.get(service, ())

    def newest(self, service: str) -> Listed | None:
        found = self.of(service)
        return found[-1] if found else None

    def find(self, service: str, backup_id: str) -> Listed | None:
        return next((b for b in self.of(service) if b.id == backup_id), None)


def parse_listing(stdout: str) -> Listing:
    now = time.time()
    found: dict[str, list[Listed]] = {}
    for line in stdout.splitlines():
        if line.startswith("now "):
            now = float(line.split()[1]) if line.split()[1:] and line.split()[1].isdigit() else now
            continue
        service, _, rest = line.partition("\t")
        backup_id, _, manifest = rest.partition("\t")
        if service and is_id(backup_id):
            found.setdefault(service, []).append(Listed(service, backup_id, Manifest.from_json(manifest)))
    return Listing(now, {s: tuple(sorted(b, key=lambda x: x.id)) for s, b in found.items()})


# ---------------------------------------------------------------- retention


def to_prune(ids: Iterable[str], *, keep: int | None, keep_for: float | None, now: float) -> list[str]:
    """The backups retention deletes: beyond the newest `keep`, or older than `keep_for`.

    The newest backup is never deleted, whatever the rule says: a node always keeps one.
    """
    newest_first = sorted(set(ids), reverse=True)
    doomed = []
    for rank, backup_id in enumerate(newest_first):
        if rank == 0:
            continue
        too_many = keep is not None and rank >= keep
        too_old = keep_for is not None and now - id_time(backup_id) > keep_for
        if too_many or too_old:
            doomed.append(backup_id)
    return sorted(doomed)


def total_size(files: dict[str, dict[str, Any]]) -> int:
    return sum(int(f.get("size", 0)) for f in files.values())


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def names(targets: Sequence[Target]) -> str:
    return ", ".join(sorted({t.service for t in targets}))
