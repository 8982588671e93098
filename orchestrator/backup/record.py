"""The controller's record of each backup: what a restore trusts, because no node can rewrite it.

A backup's files and its SHA256SUMS live on nodes: the service's own node and its `copy_to`.
A node that could rewrite a dump (the copy node above all, often the least trusted machine)
could also rewrite its SHA256SUMS and manifest, and a crafted PostgreSQL dump is replayed as
the superuser. So `swarm backup` keeps, on the controller, each backup's manifest as it was
made (`<state>/backups/<fleet>/<service>/<id>.json`, 0600 in 0700 directories), and a restore
checks the bytes it brings back against that record, never against the node's own files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from orchestrator.backup.model import Manifest, is_id
from orchestrator.config.models import is_name
from orchestrator.errors import RuntimeFailure
from orchestrator.paths import local_state_dir


def record_path(fleet: str, service: str, backup_id: str, state_dir: Path | None = None) -> Path:
    if not (is_name(fleet) and is_name(service) and is_id(backup_id)):
        raise ValueError(f"not a backup record: {fleet}/{service}/{backup_id}")
    return (state_dir or local_state_dir()) / "backups" / fleet / service / f"{backup_id}.json"


def keep_record(fleet: str, manifest: Manifest, state_dir: Path | None = None) -> Path:
    """Write the manifest of a backup this controller just made (0600)."""
    path = record_path(fleet, manifest.service, manifest.id, state_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(manifest.to_json() + "\n")
    tmp.replace(path)
    return path


def recorded(fleet: str, service: str, backup_id: str, state_dir: Path | None = None) -> Manifest | None:
    """The controller's record of a backup, None when this controller did not make it."""
    try:
        text = record_path(fleet, service, backup_id, state_dir).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    return Manifest.from_json(text)


def check_bytes(trusted: Manifest, name: str, data: bytes, sums_file: str) -> None:
    """`data` read from a node for file `name` of a backup is what the record says it was."""
    digest = hashlib.sha256(data).hexdigest()
    expected = trusted.checksum if name == sums_file else str(trusted.files.get(name, {}).get("sha256", ""))
    if digest != expected:
        raise RuntimeFailure(f"{trusted.service}: {name} of backup {trusted.id} is not the file this controller "
                             f"recorded (sha256 {digest[:16]}..., recorded {expected[:16] or 'none'}...): it was "
                             "changed on the node; nothing was restored from it")
