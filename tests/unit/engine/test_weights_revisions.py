"""Weights on a moving revision (`main`), as data: the shipped catalogue pins no commit, so each vLLM
instance follows `main`; the deploy stages the commit the hub names, the release records it and its
compose mounts it, the server starts offline from the store — and a `main` that moved is a change,
a hub that does not answer is none (models/resolve.py, render/pins.py)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import yaml

from orchestrator.events import EventBus
from tests.unit.engine.replay_fleet import COMMIT, MOVED, NodeCase, ReplayFleet

MODEL = "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
MOUNT = "/opt/ai-swarm/models/" + MODEL + "/{}:/models/" + MODEL + ":ro"


def uploaded(fleet: ReplayFleet, node: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The release the run uploaded to `node`: its record and its compose."""
    data = next(i for i in fleet.transports[node].inputs if i and b"/release.json" in i)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        def read(suffix: str) -> bytes:
            member = next(m for m in tar.getmembers() if m.name.endswith(suffix))
            return tar.extractfile(member).read()  # type: ignore[union-attr]

        return json.loads(read("/release.json")), yaml.safe_load(read("/compose.yml"))


def deploy(fleet: ReplayFleet, tmp_path: Path, **case: Any) -> EventBus:
    fleet.node("thanos", NodeCase(**case))
    bus = EventBus()
    fleet.deploy(phases="4", state_dir=tmp_path, bus=bus)
    return bus


def sent(fleet: ReplayFleet, node: str) -> list[str]:
    return [line for trip in fleet.transports[node].round_trips for line in trip]


def test_a_main_that_moved_is_a_change_staged_before_the_phase(tmp_path: Path) -> None:
    fleet = ReplayFleet()
    fleet.set_hub("moved")   # the hub says main is MOVED now; thanos serves COMMIT (MOVED staged ahead)
    bus = deploy(fleet, tmp_path, lock="locked")   # the look finds nothing different; the plan locks it
    lines = sent(fleet, "thanos")
    hashed = next(i for i, line in enumerate(lines) if line.startswith("models-hash"))
    assert f"/{MODEL}/{MOVED} " in lines[hashed]   # the new commit checked before anything changes
    up = next(i for i, line in enumerate(lines) if line.startswith("docker compose") and " up -d " in line)
    assert hashed < up and lines[up].endswith("-- vllm-backup")
    record, compose = uploaded(fleet, "thanos")
    assert record["models"]["vllm-backup"]["revision"] == MOVED
    service = compose["services"]["vllm-backup"]
    assert MOUNT.format(MOVED) in service["volumes"] and not any("/main:" in v for v in service["volumes"])
    assert service["environment"]["HF_HUB_OFFLINE"] == "1" and service["environment"]["TRANSFORMERS_OFFLINE"] == "1"
    assert service["command"][service["command"].index("--model") + 1] == f"/models/{MODEL}"
    said = [e.message for e in bus.history if "weights moved" in e.message]
    assert said and f"{MODEL}@main is {MOVED[:12]}, the node serves {COMMIT[:12]}" in said[0], said


def test_with_the_hub_down_each_node_keeps_the_commit_it_serves_and_the_run_says_so_once(tmp_path: Path) -> None:
    fleet = ReplayFleet()
    fleet.set_hub("down")
    bus = deploy(fleet, tmp_path, changed=["vllm-backup"])   # its settings changed: it is applied again
    said = [e for e in bus.history if "the hub did not say" in e.message]
    assert len(said) == 1 and said[0].state == "info" and f"{MODEL}@main" in said[0].message
    record, compose = uploaded(fleet, "thanos")
    assert record["models"]["vllm-backup"]["revision"] == COMMIT   # what the node served, no download
    assert MOUNT.format(COMMIT) in compose["services"]["vllm-backup"]["volumes"]
    assert not any("failed" == e.state for e in bus.history if e.kind == "models")


def test_with_the_hub_down_nothing_that_did_not_change_moves(tmp_path: Path) -> None:
    fleet = ReplayFleet()
    fleet.set_hub("down")
    result_bus = deploy(fleet, tmp_path)
    assert not any(line.startswith(("docker compose", "extract-release")) for line in sent(fleet, "thanos"))
    assert any(e.message.startswith("nothing to change") for e in result_bus.history)
