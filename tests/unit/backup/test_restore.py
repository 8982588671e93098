"""`swarm restore` as data: a replayed oracle answering as the lab did; the order of what
happens (lock, verify, stop the dependents, restore, start them, gate, audit, unlock) and what
is refused before anything connects."""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.backup.plan import restore_target
from orchestrator.backup.restore import check_request, restore
from orchestrator.commands import Command
from orchestrator.config.project import load_project
from orchestrator.engine.signals import Interrupted, Interrupts
from orchestrator.errors import InputError, LockHeld, RuntimeFailure
from orchestrator.events import EventBus
from orchestrator.render.fleet import render_fleet
from orchestrator.render.services import build_services
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.replay import Answer
from tests.unit.backup.replay import FileNode, answers, node, trips
from tests.unit.engine.replay_fleet import fast_gates, healthy_network

REPO = Path(__file__).resolve().parents[3]
PROJECT = fast_gates(load_project(REPO))
SERVICES = build_services(PROJECT)
NETWORK = healthy_network(PROJECT, render_fleet(PROJECT, for_node=True))


def restoring(service: str, oracle: FileNode, **kw):  # type: ignore[no-untyped-def]
    target = restore_target(PROJECT, service, SERVICES)
    return asyncio.run(restore(PROJECT, target, SERVICES, EventBus(), fleet=Fleet([oracle]), network=NETWORK, **kw))


def restore_node(**changes: Answer) -> FileNode:
    """oracle as it answered `swarm restore --service postgres` (the recording's second part)."""
    return node("oracle", **{"look-lock": answers("oracle", "look-lock")[1:],
                             "list-backups": answers("oracle", "list-backups")[-1:], **changes})


def test_postgres_is_restored_between_stopping_and_starting_litellm_then_gated() -> None:
    oracle = restore_node()
    result = restoring("postgres", oracle)
    assert result.stopped == [("oracle", "litellm")] and result.gated == ["postgres", "litellm"]
    got = [t for t in trips(oracle) if t != ["container-states"]]
    assert got == [["look-lock", "list-backups"], ["backup-verify"], ["compose-stop"], ["pg-restore"],
                   ["compose-start"], ["append-file", "unlock-if-mine"]]
    newest = result.backup_id
    assert f"pg-restore swarm-oracle postgres /opt/ai-swarm/backups/postgres/{newest} litellm litellm" in oracle.described()
    stops = [d for d in oracle.described() if " stop -- " in d or " start -- " in d]
    assert [s.split(" -- ")[1] for s in stops] == ["litellm", "litellm"]
    audit = json.loads(next(i for i in oracle.inputs if i and b'"restore"' in i))
    assert (audit["action"], audit["service"], audit["backup"], audit["ok"]) == ("restore", "postgres", newest, True)


def test_from_names_the_backup_and_one_that_is_not_there_is_bad_input() -> None:
    listed = answers("oracle", "list-backups")[-1].stdout
    oldest = sorted(line.split("\t")[1] for line in listed.splitlines()[1:])[0]
    assert restoring("postgres", restore_node(), backup_id=oldest).backup_id == oldest
    oracle = restore_node()
    with pytest.raises(InputError, match="no backup 20200101T000000Z of it on oracle"):
        restoring("postgres", oracle, backup_id="20200101T000000Z")
    assert trips(oracle)[-1] == ["append-file", "unlock-if-mine"]  # the lock is released all the same
    assert not any("compose-stop" in t for t in trips(oracle))


def test_a_backup_that_fails_its_sums_changes_nothing() -> None:
    oracle = restore_node(**{"backup-verify": Answer(1, "litellm.sql: FAILED\n", "sha256sum: WARNING\n")})
    with pytest.raises(RuntimeFailure, match="does not match its SHA256SUMS, nothing was changed"):
        restoring("postgres", oracle)
    assert not any(set(t) & {"compose-stop", "pg-restore"} for t in trips(oracle))


def test_a_failed_restore_still_starts_the_dependents_again() -> None:
    oracle = restore_node(**{"pg-restore": Answer(3, "", 'psql:<stdin>:42: ERROR:  relation "t" already exists\n')})
    with pytest.raises(RuntimeFailure, match="pg-restore failed .exit 3.: psql"):
        restoring("postgres", oracle)
    labels = [t[0] for t in trips(oracle)]
    assert labels.index("compose-start") > labels.index("pg-restore")
    audit = json.loads(next(i for i in oracle.inputs if i and b'"restore"' in i))
    assert audit["ok"] is False and "pg-restore failed" in audit["error"]


def test_a_deploy_holding_the_lock_stops_the_restore_before_anything() -> None:
    holder = json.dumps({"by": "alice@ops", "host": "elsewhere", "pid": 4242, "phases": [2], "action": "deploy"})
    oracle = node("oracle", **{"look-lock": Answer(75, holder + "\n", "")})
    with pytest.raises(LockHeld, match="alice@ops"):
        restoring("postgres", oracle)
    assert trips(oracle) == [["look-lock", "list-backups"]]


def test_redis_is_stopped_refilled_and_started_in_that_order() -> None:
    oracle = restore_node(**{"list-backups": answers("oracle", "list-backups")[1:2]})
    result = restoring("redis", oracle)
    labels = [t[0] for t in trips(oracle) if t != ["container-states"]]
    assert labels == ["look-lock", "backup-verify", "compose-stop", "compose-stop", "redis-restore",
                      "compose-start", "compose-start", "append-file"]
    stops = [d.split(" -- ")[1] for d in oracle.described() if " stop -- " in d]
    assert stops == ["litellm", "redis"] and result.gated == ["redis", "litellm"]


def test_protected_and_malformed_requests_are_refused_before_connecting() -> None:
    qdrant = restore_target(PROJECT, "qdrant", SERVICES)
    with pytest.raises(InputError, match="protected on starlord.*--force qdrant"):
        check_request(qdrant, None, None)
    with pytest.raises(InputError, match="--force names the protected service"):
        check_request(qdrant, None, "postgres")
    check_request(qdrant, None, "qdrant")
    postgres = restore_target(PROJECT, "postgres", SERVICES)
    with pytest.raises(InputError, match="--from 'last-night'"):
        check_request(postgres, "last-night", None)
    check_request(replace(postgres, protected=False), "20261201T225444Z", None)


def test_a_signal_stops_the_gate_after_the_data_is_back_and_still_unlocks() -> None:
    interrupts = Interrupts()
    started = answers("oracle", "compose-start")[0]

    def start_then_signal(_command: Command) -> Answer:  # SIGTERM while litellm starts again
        interrupts.request(signal.SIGTERM)
        return started

    oracle = restore_node(**{"compose-start": start_then_signal})
    with pytest.raises(Interrupted, match="SIGTERM stopped the gate after the data was restored") as raised:
        restoring("postgres", oracle, interrupts=interrupts)
    assert raised.value.exit_code == 143
    labels = [t[0] for t in trips(oracle) if t != ["container-states"]]
    assert labels[-3:] == ["pg-restore", "compose-start", "append-file"]
    audit = json.loads(next(i for i in oracle.inputs if i and b'"restore"' in i))
    assert audit["ok"] is False and audit["error"] == "SIGTERM"
