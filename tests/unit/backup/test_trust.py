"""A restore trusts the controller's record of a backup, never a node's own files: a dump that
was rewritten on the `copy_to` node (with a SHA256SUMS and manifest to match) is refused before
anything is replayed as the PostgreSQL superuser."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.backup.model import Manifest
from orchestrator.backup.plan import restore_target
from orchestrator.backup.record import keep_record, recorded
from orchestrator.backup.restore import restore
from orchestrator.backup.run import copy_backup
from orchestrator.commands import backup as bcmd
from orchestrator.errors import RuntimeFailure
from orchestrator.events import EventBus
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.replay import Answer
from tests.unit.backup.replay import FileNode, trips
from tests.unit.backup.test_restore import NETWORK, PROJECT, SERVICES

BACKUP_ID = "20261201T031500Z"
GENUINE = {"globals.sql": b"CREATE ROLE litellm;\n", "litellm.sql": b"CREATE TABLE spend (x int);\n"}
CRAFTED = b"ALTER ROLE litellm SUPERUSER; COPY (SELECT 1) TO PROGRAM 'id';\n"


def _sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items())).encode()


def _manifest(files: dict[str, bytes]) -> Manifest:
    return Manifest(service="postgres", node="oracle", method="pg_dump", id=BACKUP_ID, created=1796165700.0,
                    duration_s=1.0, size=sum(map(len, files.values())),
                    checksum=hashlib.sha256(_sums(files)).hexdigest(),
                    files={n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()},
                    version="test", details={"databases": ["litellm"]})


def _copy_node(files: dict[str, bytes]) -> FileNode:
    """starlord, keeping a copy of the backup whose files (and own SHA256SUMS, manifest) are `files`."""
    directory = f"/opt/ai-swarm/backups/postgres/{BACKUP_ID}"
    listing = f"now 1796165850\npostgres\t{BACKUP_ID}\t{_manifest(files).to_json()}\n"
    node = FileNode(name="starlord", replies={"list-backups": Answer(0, listing)})
    node.files.update({f"{directory}/{n}": d for n, d in files.items()})
    node.files[f"{directory}/{bcmd.SUMS_FILE}"] = _sums(files)
    return node


def _oracle_without_the_backup() -> FileNode:
    return FileNode(name="oracle", replies={"look-lock": Answer(0, "locked\n"),
                                            "list-backups": Answer(0, "now 1796165850\n")})


def _restore_from_copy(oracle: FileNode, starlord: FileNode) -> None:
    target = replace(restore_target(PROJECT, "postgres", SERVICES), copy_to="starlord")
    asyncio.run(restore(PROJECT, target, SERVICES, EventBus(), fleet=Fleet([oracle, starlord]), network=NETWORK))


def test_every_backup_is_recorded_on_the_controller_0600(state_dir: Path) -> None:
    manifest = _manifest(GENUINE)
    path = keep_record(PROJECT.inventory.fleet, manifest)
    assert recorded(PROJECT.inventory.fleet, "postgres", BACKUP_ID) == manifest
    assert path.is_relative_to(state_dir) and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_dump_rewritten_on_the_copy_node_is_refused_before_any_restore(state_dir: Path) -> None:
    keep_record(PROJECT.inventory.fleet, _manifest(GENUINE))           # what `swarm backup` made
    crafted = {**GENUINE, "litellm.sql": CRAFTED}                       # with sums and manifest to match
    oracle, starlord = _oracle_without_the_backup(), _copy_node(crafted)
    with pytest.raises(RuntimeFailure, match="litellm.sql of backup .* is not the file this controller recorded"):
        _restore_from_copy(oracle, starlord)
    assert CRAFTED not in oracle.files.values()
    assert not any(set(t) & {"backup-commit", "pg-restore", "compose-stop"} for t in trips(oracle))


def test_a_copy_this_controller_never_recorded_is_not_restored(state_dir: Path) -> None:
    oracle, starlord = _oracle_without_the_backup(), _copy_node(GENUINE)
    with pytest.raises(RuntimeFailure, match="no record of it"):
        _restore_from_copy(oracle, starlord)
    assert not any(set(t) & {"pg-restore", "compose-stop"} for t in trips(oracle))


def test_a_genuine_copy_comes_back_with_the_controller_s_manifest(state_dir: Path) -> None:
    manifest = _manifest(GENUINE)
    source, dest = _copy_node(GENUINE), FileNode(name="oracle", replies={"list-backups": Answer(0, "now 1\n")})
    target = replace(restore_target(PROJECT, "postgres", SERVICES), deploy_root="/opt/ai-swarm")
    asyncio.run(copy_backup(source, dest, target, manifest, "/opt/ai-swarm", trusted=True))
    tmp = f"/opt/ai-swarm/backups/postgres/.tmp-{BACKUP_ID}"
    assert dest.files[f"{tmp}/litellm.sql"] == GENUINE["litellm.sql"]
    committed = next(i for i in dest.inputs if i and b'"checksum"' in i)
    assert json.loads(committed)["checksum"] == manifest.checksum
