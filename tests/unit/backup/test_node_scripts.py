"""The backup frame's node scripts, run by a real /bin/sh on a temporary deploy root: a
backup appears whole or not at all, with 0600 files in 0700 directories, a SHA256SUMS that
`sha256sum -c` accepts (and a tampered file it refuses), retention deletes exactly what it
names, and the listings say what is there."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
from pathlib import Path

import pytest

from orchestrator.backup.model import Manifest, parse_listing
from orchestrator.commands import Command, Script
from orchestrator.commands import backup as b
from orchestrator.preflight.facts import FactsRequest, parse_facts, probe_script
from orchestrator.transport.local import LocalTransport

ID1, ID2, ID3 = "20261201T010000Z", "20261202T010000Z", "20261203T010000Z"


def run(*commands: Command, input: bytes | None = None):
    return asyncio.run(LocalTransport("n1").run(Script.of(*commands), check=False, input=input))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "opt" / "ai-swarm"


def make_backup(root: Path, service: str, backup_id: str, files: dict[str, bytes]) -> Path:
    """What a method's dump leaves, then the frame: prepare, (files), sums, commit."""
    sdir = root / "backups" / service
    assert run(b.backup_prepare(str(sdir), backup_id)).ok
    tmp = sdir / b.tmp_name(backup_id)
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    sums = run(b.backup_sums(str(tmp)))
    assert sums.ok, sums.stderr
    digests, sizes, text = b.parse_sums(sums.steps[0].stdout)
    manifest = Manifest(service=service, node="n1", method="pg_dump", id=backup_id, created=0.0, duration_s=0.1,
                        size=sum(sizes[n] for n in digests), checksum=hashlib.sha256(text.encode()).hexdigest(),
                        files={n: {"size": sizes[n], "sha256": d} for n, d in digests.items()}, version="t")
    assert run(b.backup_commit(str(sdir), backup_id), input=manifest.to_json().encode()).ok
    return sdir / backup_id


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_backup_is_renamed_into_place_whole_with_private_files(root: Path) -> None:
    done = make_backup(root, "postgres", ID1, {"litellm.sql": b"CREATE TABLE t();\n", "globals.sql": b"--\n"})
    assert sorted(p.name for p in done.iterdir()) == ["SHA256SUMS", "globals.sql", "litellm.sql", "manifest.json"]
    assert not list((root / "backups" / "postgres").glob(".tmp-*"))
    assert mode(root / "backups" / "postgres") == 0o700 and mode(done) == 0o700
    assert all(mode(p) == 0o600 for p in done.iterdir())
    manifest = json.loads((done / "manifest.json").read_text())
    assert manifest["files"]["litellm.sql"] == {"size": 18, "sha256": hashlib.sha256(b"CREATE TABLE t();\n").hexdigest()}
    assert manifest["checksum"] == hashlib.sha256((done / "SHA256SUMS").read_bytes()).hexdigest()


def test_sums_cover_nested_files_and_verify_catches_a_tampered_one(root: Path) -> None:
    done = make_backup(root, "qdrant", ID1, {"snapshots/docs/docs-1.snapshot": b"tar bytes"})
    assert "snapshots/docs/docs-1.snapshot" in (done / "SHA256SUMS").read_text()
    assert run(b.backup_verify(str(done))).ok
    (done / "snapshots/docs/docs-1.snapshot").write_bytes(b"tar bytez")
    result = run(b.backup_verify(str(done)))
    assert not result.ok and "docs-1.snapshot" in result.stdout + result.stderr


def test_a_cut_off_backup_is_never_listed_and_the_next_prepare_clears_it(root: Path) -> None:
    make_backup(root, "redis", ID1, {"dump.rdb": b"REDIS0011"})
    sdir = root / "backups" / "redis"
    assert run(b.backup_prepare(str(sdir), ID2)).ok          # a run that died after its dump
    (sdir / b.tmp_name(ID2) / "dump.rdb").write_bytes(b"half")
    listing = parse_listing(run(b.list_backups(str(root), ["redis"])).steps[0].stdout)
    assert [x.id for x in listing.of("redis")] == [ID1]
    assert run(b.backup_prepare(str(sdir), ID3)).ok
    assert sorted(p.name for p in sdir.iterdir()) == [b.tmp_name(ID3), ID1]


def test_discard_removes_only_the_failed_temp_dir(root: Path) -> None:
    make_backup(root, "redis", ID1, {"dump.rdb": b"x"})
    sdir = root / "backups" / "redis"
    run(b.backup_prepare(str(sdir), ID2))
    assert run(b.backup_discard(str(sdir), ID2)).ok
    assert [p.name for p in sdir.iterdir()] == [ID1]


def test_prune_deletes_exactly_the_named_backups(root: Path) -> None:
    for backup_id in (ID1, ID2, ID3):
        make_backup(root, "vault", backup_id, {"storage.tar": backup_id.encode()})
    assert run(b.backup_prune(str(root / "backups" / "vault"), [ID1, ID2])).ok
    assert [p.name for p in (root / "backups" / "vault").iterdir()] == [ID3]


def test_listing_reads_every_complete_backup_with_its_manifest(root: Path) -> None:
    make_backup(root, "postgres", ID2, {"a.sql": b"a"})
    make_backup(root, "postgres", ID1, {"a.sql": b"b"})
    (root / "backups" / "postgres" / "notes.txt").write_text("not a backup")
    listing = parse_listing(run(b.list_backups(str(root), ["postgres", "redis"])).steps[0].stdout)
    assert [x.id for x in listing.of("postgres")] == [ID1, ID2] and listing.of("redis") == ()
    newest = listing.newest("postgres")
    assert newest is not None and newest.manifest is not None and newest.manifest.files["a.sql"]["size"] == 1
    assert abs(listing.now - __import__("time").time()) < 60


def test_preflight_reads_the_newest_backup_of_each_service(root: Path) -> None:
    make_backup(root, "postgres", ID1, {"a.sql": b"a"})
    make_backup(root, "postgres", ID3, {"a.sql": b"a"})
    request = FactsRequest(deploy_root=str(root), backups=("postgres", "redis"))
    steps = asyncio.run(LocalTransport("n1").run(probe_script(request), check=False)).steps
    facts = parse_facts(request, steps, "n1")
    assert facts.backups == {"postgres": ID3, "redis": None} and facts.backup_clock is not None


@pytest.mark.parametrize("bad", ["../etc", "-rf", "a b", "x;rm -rf /", ".hidden", "", "ünï"])
def test_names_that_could_leave_their_directory_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        b.pg_dump("swarm-oracle", "postgres", "/tmp/x", "litellm", [bad])
    with pytest.raises(ValueError):
        b.list_backups("/opt/ai-swarm", [bad])


@pytest.mark.parametrize("bad", ["2026-12-01", "20261201T010000", "../20261201T010000Z", "20261201T010000Z;x"])
def test_only_backup_ids_reach_a_prune(bad: str) -> None:
    with pytest.raises(ValueError):
        b.backup_prune("/opt/ai-swarm/backups/redis", [bad])


def test_no_data_becomes_code(root: Path, tmp_path: Path) -> None:
    """A hostile directory name is data: the scripts create it, they do not run it."""
    evil = tmp_path / "a dir; touch PWNED $(touch PWNED2)"
    make_backup(evil, "postgres", ID1, {"x.sql": b"x"})
    assert (evil / "backups" / "postgres" / ID1 / "x.sql").is_file()
    assert not (Path.cwd() / "PWNED").exists() and not (Path.cwd() / "PWNED2").exists()
