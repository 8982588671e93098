"""Moving revisions (`main`) resolved to commits at stage time, against the hub stand-in driven by the
real huggingface_hub client (as tests/unit/lab/test_hub_standin.py does): the commit `main` names
now, a branch that moved, and a hub that does not answer (each service keeps what its node serves)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.clients.hub import HubClient
from orchestrator.clients.revisions import hub_commits
from orchestrator.config.project import load_project
from orchestrator.lab import models as synthetic
from orchestrator.lab.standins import hub as standin
from orchestrator.models.resolve import Resolution, ask_hub, moving_pins, with_commits
from orchestrator.render.services import Service, build_services
from orchestrator.render.weights import WeightsPin

REPO_ROOT = Path(__file__).resolve().parents[3]
MODEL = "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"   # vllm-backup and vllm-secondary serve it, unpinned
OLD = "1" * 40


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[standin.HubServer, Path]]:
    server = standin.serve("127.0.0.1", 0, tmp_path / "repos")
    yield server, tmp_path / "repos"
    server.shutdown()


@pytest.fixture(scope="module")
def services() -> list[Service]:
    return build_services(load_project(REPO_ROOT))


def test_the_shipped_fleet_serves_models_on_a_moving_revision(services: list[Service]) -> None:
    pins = moving_pins(services)
    assert WeightsPin(MODEL, "main") in pins
    assert all(p.moving and not p.pinned for p in pins)


def test_main_resolves_to_the_commit_it_names_now_and_follows_it_when_it_moves(
        hub: tuple[standin.HubServer, Path], services: list[Service]) -> None:
    server, root = hub
    first = synthetic.make_repo(root, synthetic.RepoSpec(MODEL, total_bytes=20_000, shards=1))
    pins = [WeightsPin(MODEL, "main")]
    assert asyncio.run(ask_hub(HubClient(server.url), pins)).commits == {pins[0]: first}
    second = synthetic.make_repo(root, synthetic.RepoSpec(MODEL, total_bytes=30_000, shards=1))  # main moves
    answer = asyncio.run(ask_hub(HubClient(server.url), pins))
    assert second != first and answer.commits == {pins[0]: second} and answer.note() is None
    chosen = answer.chosen(services, {"vllm-backup": WeightsPin(MODEL, first)})
    assert chosen["vllm-backup"] == WeightsPin(MODEL, second)   # the hub's answer beats what the node serves
    staged = {s.name: s.weights for s in with_commits(services, chosen)}
    assert staged["vllm-backup"] == WeightsPin(MODEL, second) and staged["vllm-secondary"] == WeightsPin(MODEL, second)
    assert staged["vllm-primary"] is not None and staged["vllm-primary"].moving   # another repository: not asked


def test_an_unknown_branch_is_the_hubs_answer_not_a_commit(hub: tuple[standin.HubServer, Path]) -> None:
    server, root = hub
    synthetic.make_repo(root, synthetic.RepoSpec(MODEL, total_bytes=20_000, shards=1))
    answer = asyncio.run(ask_hub(HubClient(server.url), [WeightsPin(MODEL, "no-such-branch")]))
    assert not answer.commits and "has no revision no-such-branch" in answer.failed[WeightsPin(MODEL, "no-such-branch")]


def test_a_hub_that_does_not_answer_keeps_the_commit_each_node_serves(
        hub: tuple[standin.HubServer, Path], services: list[Service]) -> None:
    server, _ = hub
    url = server.url
    server.shutdown()
    answer = asyncio.run(ask_hub(HubClient(url, timeout=2.0), [WeightsPin(MODEL, "main")]))
    assert not answer.commits
    note = answer.note()
    assert note is not None and f"{MODEL}@main" in note and "keeps serving the commit it has" in note
    chosen = answer.chosen(services, {"vllm-backup": WeightsPin(MODEL, OLD),
                                      "vllm-secondary": WeightsPin("other/model", OLD)})
    assert chosen == {"vllm-backup": WeightsPin(MODEL, OLD)}   # another repository's commit is not taken
    assert Resolution().note() is None


def test_the_fast_paths_stdlib_question_gets_the_same_commit_and_no_verdict_from_a_stopped_hub(
        hub: tuple[standin.HubServer, Path]) -> None:
    """clients/revisions.hub_commits (the no-op fast path's, without huggingface_hub) against the same
    stand-in: the commit main names, "" for what the hub refuses, None when nothing answers."""
    server, root = hub
    commit = synthetic.make_repo(root, synthetic.RepoSpec(MODEL, total_bytes=20_000, shards=1))
    answers = hub_commits(server.url, [f"{MODEL}@main", f"{MODEL}@no-such-branch", "acme/nothing@main"])
    assert answers == {f"{MODEL}@main": commit, f"{MODEL}@no-such-branch": "", "acme/nothing@main": ""}
    url = server.url
    server.shutdown()
    assert hub_commits(url, [f"{MODEL}@main"], timeout=2.0) == {f"{MODEL}@main": None}
