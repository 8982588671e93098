"""`swarm backup` as data: replayed lab nodes in, round trips and manifests out."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.backup.model import Manifest, parse_listing
from orchestrator.backup.plan import backup_targets
from orchestrator.backup.run import backup
from orchestrator.commands import Command
from orchestrator.commands import backup as bcmd
from orchestrator.config.project import load_project
from orchestrator.engine.signals import Interrupts
from orchestrator.events import EventBus
from orchestrator.render.backups import new_id
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.replay import Answer
from tests.unit.backup.replay import FileNode, answers, first_listing, node, trips

REPO = Path(__file__).resolve().parents[3]
PROJECT = load_project(REPO)
ORACLE = ["vault", "postgres", "redis"]


def targets(*names: str, **changes: object):  # type: ignore[no-untyped-def]
    return [replace(t, **changes) for t in backup_targets(PROJECT, names=list(names))]


def run(targets, *nodes: FileNode, bus: EventBus | None = None):  # type: ignore[no-untyped-def]
    # time.time is read here, not as backup()'s default (bound at import): _fixed_clock has frozen it
    return asyncio.run(backup(PROJECT, targets, bus or EventBus(), fleet=Fleet(nodes), clock=time.time))


def test_one_node_three_services_one_lock_and_two_trips_each() -> None:
    oracle = node("oracle", **{"list-backups": [first_listing("oracle")]})
    report = run(targets(*ORACLE), oracle)
    assert report.exit_code == 0 and [o.ok for o in report.outcomes] == [True, True, True]
    assert trips(oracle) == [
        ["look-lock", "list-backups"],
        ["backup-prepare", "vault-file-copy", "backup-sums"], ["backup-commit"],
        ["backup-prepare", "pg-dump", "backup-sums"], ["backup-commit"],
        ["backup-prepare", "redis-bgsave", "backup-sums"], ["backup-commit"],
        ["list-backups", "append-file", "unlock-if-mine"]]
    tmp = f"/opt/ai-swarm/backups/postgres/.tmp-{report.backup_id}"
    assert f"pg-dump swarm-oracle postgres {tmp} litellm litellm" in oracle.described()


def test_each_manifest_says_what_was_written_and_its_checksum_covers_every_file() -> None:
    oracle = node("oracle")
    report = run(targets(*ORACLE), oracle)
    sums = {o.target.service: o.manifest for o in report.outcomes}
    postgres = sums["postgres"]
    assert postgres is not None and sorted(postgres.files) == ["globals.sql", "litellm.sql"]
    assert postgres.files["litellm.sql"]["size"] == 1986 and postgres.size == 1986 + 669
    recorded_sums = answers("oracle", "backup-sums")[1].stdout.split("==sums\n")[1].split("==sizes\n")[0]
    assert postgres.checksum == hashlib.sha256(recorded_sums.encode()).hexdigest()
    written = [Manifest.from_json(i.decode()) for i in oracle.inputs if i and b'"swarm_version"' in i]
    assert [(m.service, m.checksum, m.files) for m in written if m] == [
        (s, sums[s].checksum, sums[s].files) for s in ORACLE]  # type: ignore[union-attr]
    assert sums["vault"] is not None and sums["vault"].contains_secrets


def test_what_is_printed_of_a_secret_backup_is_its_checksum() -> None:
    bus = EventBus()
    run(targets("vault"), node("oracle"), bus=bus)
    said = " ".join(e.message for e in bus.history)
    assert "storage.tar" not in said and "contains secrets" in said and "sha256 " in said


def test_retention_prunes_in_the_commit_beyond_the_count() -> None:
    oracle = node("oracle")
    report = run(targets("redis", keep=1), oracle)
    listed = sorted(b.id for b in parse_listing(first_listing("oracle").stdout).of("redis"))
    assert report.outcomes[0].pruned == tuple(listed)
    assert any(t[:2] == ["backup-commit", "backup-prune"] for t in trips(oracle))


def test_a_held_lock_backs_up_nothing_and_says_whose_it_is() -> None:
    holder = json.dumps({"by": "alice@ops", "host": "elsewhere", "pid": 4242, "phases": [2], "action": "deploy"})
    oracle = node("oracle", **{"look-lock": Answer(75, holder + "\n", "")})
    report = run(targets(*ORACLE), oracle)
    assert report.exit_code == 4 and not any(o.ok for o in report.outcomes)
    assert "alice@ops" in (report.outcomes[0].error or "")
    assert trips(oracle) == [["look-lock", "list-backups"]]


def test_a_failing_dump_is_discarded_and_the_other_services_still_back_up() -> None:
    failed = Answer(1, "", "pg_dump: error: connection to server on socket failed\n")
    oracle = node("oracle", **{"pg-dump": failed})
    report = run(targets(*ORACLE), oracle)
    by = {o.target.service: o for o in report.outcomes}
    assert report.exit_code == 1 and by["vault"].ok and by["redis"].ok and not by["postgres"].ok
    assert "pg-dump failed (exit 1): pg_dump: error: connection" in (by["postgres"].error or "")
    assert ["backup-discard"] in trips(oracle)
    audit = b"".join(i for i in oracle.inputs if i and b'"action": "backup"' in i).decode()
    assert '"ok": false' in audit and '"service": "postgres"' in audit


def test_an_unreachable_optional_node_is_skipped_not_failed() -> None:
    oracle = node("oracle")
    overflow = FileNode(name="overflow", dead=True)
    extra = replace(targets("redis")[0], service="redis-cache", node="overflow")
    report = run([*targets("redis"), extra], oracle, overflow)
    by = {o.target.service: o for o in report.outcomes}
    assert by["redis"].ok and by["redis-cache"].skipped and report.exit_code == 0


def test_a_copy_goes_to_the_other_node_verified_there() -> None:
    oracle = node("oracle")
    starlord = FileNode(name="starlord", replies={"list-backups": Answer(0, "now 1796165850\n")})
    target = targets("postgres", copy_to="starlord")[0]
    for name in ("globals.sql", "litellm.sql", bcmd.SUMS_FILE):  # what get() reads back on oracle
        oracle.files[f"{target.directory(this_run_id())}/{name}"] = name.encode()
    report = run([target], oracle, starlord)
    outcome = report.outcomes[0]
    assert outcome.ok and outcome.copied_to == "starlord" and outcome.copy_error is None
    tmp = f"/opt/ai-swarm/backups/postgres/.tmp-{report.backup_id}"
    assert sorted(starlord.files) == [f"{tmp}/{n}" for n in ("SHA256SUMS", "globals.sql", "litellm.sql")]
    assert set(starlord.modes.values()) == {0o600}
    assert trips(starlord) == [["list-backups", "backup-prepare"], ["backup-verify", "backup-commit"]]


def test_a_copy_that_does_not_verify_is_removed_and_reported() -> None:
    oracle = node("oracle")
    starlord = FileNode(name="starlord", replies={"list-backups": Answer(0, "now 1796165850\n"),
                                                  "backup-verify": Answer(1, "litellm.sql: FAILED\n", "")})
    target = targets("postgres", copy_to="starlord")[0]
    oracle.files = {f"{target.directory(this_run_id())}/{n}": b"x" for n in ("globals.sql", "litellm.sql", "SHA256SUMS")}
    report = run([target], oracle, starlord)
    outcome = report.outcomes[0]
    assert outcome.ok and outcome.copied_to is None and "backup-verify failed" in (outcome.copy_error or "")
    assert ["backup-discard"] in trips(starlord) and report.exit_code == 1


def this_run_id() -> str:
    """The id the run will use: it names its backups by the clock, frozen for the test."""
    return new_id(time.time())


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """One second for the whole test, so a backup id can be known before the run."""
    frozen = time.time()
    monkeypatch.setattr("orchestrator.backup.run.time.time", lambda: frozen)
    monkeypatch.setattr(time, "time", lambda: frozen)


def test_a_signal_lets_the_current_service_finish_skips_the_rest_and_unlocks() -> None:
    interrupts = Interrupts()
    committed = answers("oracle", "backup-commit")[0]

    def commit_then_signal(_command: Command) -> Answer:  # SIGTERM arrives while vault's backup commits
        interrupts.request(signal.SIGTERM)
        return committed

    oracle = node("oracle", **{"backup-commit": commit_then_signal})
    report = asyncio.run(backup(PROJECT, targets(*ORACLE), EventBus(), fleet=Fleet([oracle]), interrupts=interrupts))
    by = {o.target.service: o for o in report.outcomes}
    assert by["vault"].ok and not by["postgres"].ok and not by["redis"].ok
    assert by["redis"].error == "not started: SIGTERM stopped the run"
    assert report.exit_code == 143
    assert not any("pg-dump" in t for t in trips(oracle))
    assert trips(oracle)[-1] == ["list-backups", "append-file", "unlock-if-mine"]
