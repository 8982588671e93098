"""Qdrant's snapshot API as swarm uses it, against the lab's Qdrant stand-in served in-process:
a snapshot is a file in the snapshots directory with Qdrant's sha256, a recover puts the
collection back (creating it), a wrong checksum or a file outside the directory is refused;
and a backup of a Qdrant node: snapshots made, copied, checked against Qdrant's checksums,
then removed from the server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from orchestrator.backup.plan import backup_targets
from orchestrator.backup.qdrant import QdrantApi
from orchestrator.backup.run import backup
from orchestrator.commands import Command
from orchestrator.config.project import load_project
from orchestrator.errors import RuntimeFailure
from orchestrator.events import EventBus
from orchestrator.lab.standins import qdrant
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.replay import Answer
from tests.unit.backup.replay import FileNode, trips

REPO = Path(__file__).resolve().parents[3]
POINT = {"id": 7, "vector": [0.1, 0.2, 0.3], "payload": {"title": "kept"}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, qdrant.Store]]:
    store = qdrant.Store(tmp_path / "storage", tmp_path / "snapshots")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), qdrant.make_handler(store, None))
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpx.put(f"{base}/collections/docs", json={"vectors": {"size": 3, "distance": "Cosine"}})
    httpx.put(f"{base}/collections/docs/points", json={"points": [POINT]})
    yield base, store
    httpd.shutdown()
    httpd.server_close()


def api_call(base: str, work):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with httpx.AsyncClient() as client:
            return await work(QdrantApi(client, base, "qdrant"))

    return asyncio.run(go())


def test_a_snapshot_recovers_a_deleted_collection(server: tuple[str, qdrant.Store]) -> None:
    base, store = server
    snap = api_call(base, lambda api: api.create_snapshot("docs"))
    path = store.snapshots / "docs" / snap.name
    assert path.is_file() and snap.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert api_call(base, lambda api: api.collections()) == ["docs"]
    httpx.delete(f"{base}/collections/docs")
    assert httpx.get(f"{base}/collections/docs").status_code == 404
    api_call(base, lambda api: api.recover("docs", f"file://{path}", snap.checksum))
    assert httpx.get(f"{base}/collections/docs/points/7").json()["result"] == POINT
    api_call(base, lambda api: api.delete_snapshot("docs", snap.name))
    assert not path.exists()


def test_a_wrong_checksum_or_a_file_elsewhere_is_refused(server: tuple[str, qdrant.Store], tmp_path: Path) -> None:
    base, store = server
    snap = api_call(base, lambda api: api.create_snapshot("docs"))
    path = store.snapshots / "docs" / snap.name
    with pytest.raises(RuntimeFailure, match="400: Bad request: Snapshot checksum mismatch"):
        api_call(base, lambda api: api.recover("docs", f"file://{path}", "0" * 64))
    outside = tmp_path / "elsewhere.snapshot"
    outside.write_bytes(path.read_bytes())
    with pytest.raises(RuntimeFailure, match="does not exist in the snapshots directory"):
        api_call(base, lambda api: api.recover("docs", f"file://{outside}", None))


def test_an_uploaded_snapshot_recovers_too(server: tuple[str, qdrant.Store]) -> None:
    base, store = server
    snap = api_call(base, lambda api: api.create_snapshot("docs"))
    data = (store.snapshots / "docs" / snap.name).read_bytes()
    answer = httpx.post(f"{base}/collections/copy/snapshots/upload?priority=snapshot",
                        files={"snapshot": (snap.name, data)})
    assert answer.status_code == 200, answer.text
    assert httpx.post(f"{base}/collections/copy/points/scroll", json={}).json()["result"]["points"] == [POINT]


def test_a_qdrant_backup_copies_each_snapshot_and_checks_it_against_qdrant(server: tuple[str, qdrant.Store]) -> None:
    base, store = server
    project = load_project(REPO)
    port = int(base.rsplit(":", 1)[1])
    target = backup_targets(project, names=["qdrant"])[0]
    target = replace(target, address="127.0.0.1", options={**target.options, "port": port})

    def sums(command: Command) -> Answer:  # what sha256sum prints over the copied snapshots
        lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  snapshots/docs/{p.name}"
                 for p in sorted((store.snapshots / "docs").glob("*.snapshot"))]
        return Answer(0, "==sums\n" + "\n".join(lines) + "\n==sizes\n10240 ./snapshots/docs/x.snapshot\n")

    starlord = FileNode(name="starlord", replies={"look-lock": Answer(0, "locked\n"), "backup-sums": sums,
                                                  "list-backups": Answer(0, "now 1796165850\n")})
    report = asyncio.run(backup(project, [target], EventBus(), fleet=Fleet([starlord])))
    outcome = report.outcomes[0]
    assert outcome.ok, outcome.error
    assert outcome.manifest is not None and list(outcome.manifest.details["collections"]) == ["docs"]
    index = json.loads(next(i for i in starlord.inputs if i and i.startswith(b'{"docs"')))
    assert index == {"docs": outcome.manifest.details["collections"]["docs"]["snapshot"]}
    assert trips(starlord)[1] == ["backup-prepare", "qdrant-fetch", "backup-sums"]
    assert list((store.snapshots / "docs").glob("*.snapshot")) == []  # removed from the server after the copy


def test_a_copy_that_differs_from_qdrant_checksum_fails_the_backup(server: tuple[str, qdrant.Store]) -> None:
    base, _ = server
    project = load_project(REPO)
    target = backup_targets(project, names=["qdrant"])[0]
    target = replace(target, address="127.0.0.1", options={**target.options, "port": int(base.rsplit(":", 1)[1])})
    bad = Answer(0, "==sums\n" + "0" * 64 + "  snapshots/docs/whatever.snapshot\n==sizes\n")
    starlord = FileNode(name="starlord", replies={"look-lock": Answer(0, "locked\n"), "backup-sums": bad})
    report = asyncio.run(backup(project, [target], EventBus(), fleet=Fleet([starlord])))
    assert not report.outcomes[0].ok and "does not match the checksum Qdrant gave" in (report.outcomes[0].error or "")
    assert ["backup-discard"] in trips(starlord)
