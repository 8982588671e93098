"""The protected-service record: compare with the last verify, then remember what was seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.conformance import protected
from orchestrator.conformance.protected import Seen


def test_first_verify_records_and_passes(tmp_path: Path) -> None:
    path = tmp_path / "state" / protected.STATE_FILE
    now = Seen("abc", "2026-11-22T12:00:00Z")
    assert protected.swap("starlord@198.18.1.2/qdrant", now, path) is None
    assert protected.recreate_problems("qdrant", None, now) == []
    assert json.loads(path.read_text())["starlord@198.18.1.2/qdrant"]["container_id"] == "abc"


def test_a_recreate_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / protected.STATE_FILE
    key = protected.record_key("starlord", "198.18.1.2", "qdrant")
    protected.swap(key, Seen("old", "t1"), path)
    before = protected.swap(key, Seen("new", "t2"), path)
    assert before == Seen("old", "t1")
    problems = protected.recreate_problems("qdrant", before, Seen("new", "t2"))
    assert problems and "recreated since the last verify" in problems[0]
    assert protected.swap(key, Seen("new", "t2"), path) == Seen("new", "t2")


def test_state_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path))
    assert protected.state_path() == tmp_path / "verify-protected.json"


def test_a_corrupt_record_counts_as_first_verify(tmp_path: Path) -> None:
    path = tmp_path / protected.STATE_FILE
    path.write_text("{not json")
    assert protected.swap("k", Seen("a", "t"), path) is None
