"""The deploy engine as data: each case in cases/*.yml gives the facts (what each replayed node
runs, what fails where) and the exact round trips the engine must make, undo included.

Round trips are compared as `Command.describe()` lines with `*` wildcards; `{new:NODE}` is
the release this run uploaded to NODE, `{prev:NODE}` the one it ran before. Repeated
read-only gate reads, and repeated reads of the front door's runtime API while a drain or a
reload is awaited, collapse into one (how many rounds a wait takes is timing, not logic).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config.project import load_project
from orchestrator.engine.signals import Interrupts
from orchestrator.errors import SwarmError
from orchestrator.transport.replay import Answer, ReplayTransport
from tests.unit.engine.replay_fleet import REPO, NodeCase, ReplayFleet, fast_gates, on_command
from tests.unit.lab_answers import release_record, states

CASES = sorted((Path(__file__).parent / "cases").glob("*.yml"))


def _reply(node: str, spec: Any) -> Any:
    if isinstance(spec, list):
        return [_reply(node, s) for s in spec]
    if "states" in spec:
        return states(node, **{k: v for k, v in spec["states"].items()})
    return Answer(spec.get("exit", 0), spec.get("stdout", ""), spec.get("stderr", ""))


def node_case(node: str, spec: dict[str, Any]) -> NodeCase:
    spec = dict(spec)
    replies = {k: _reply(node, v) for k, v in spec.pop("replies", {}).items()}
    return NodeCase(replies=replies, **spec)


def project_with(services: dict[str, dict[str, dict[str, Any]]], tmp_path: Path) -> Any:
    """The repository's project with some instances' settings changed in its inventory
    (`inventory: {node: {service: {key: value}}}` in a case)."""
    root = tmp_path / "project"
    for part in ("inventory", "playbooks", "roles"):
        shutil.copytree(REPO / part, root / part)
    path = root / "inventory" / "swarm.yml"
    data = yaml.safe_load(path.read_text())
    for node, table in services.items():
        for svc, values in table.items():
            data["nodes"][node].setdefault("services", {}).setdefault(svc, {}).update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return fast_gates(load_project(root))


def new_release(transport: ReplayTransport) -> str:
    for trip in transport.round_trips:
        for line in trip:
            if line.startswith("extract-release "):
                return line.split()[-1]
    return "<none>"


def substitute(text: str, transports: dict[str, ReplayTransport]) -> str:
    def one(match: re.Match[str]) -> str:
        kind, node = match.group(1), match.group(2)
        return new_release(transports[node]) if kind == "new" else str(release_record(node)["id"])

    return re.sub(r"\{(new|prev):([a-z0-9-]+)\}", one, text)


def collapsed(trips: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    for trip in trips:
        if out and trip == out[-1] and all(line.startswith(("container-states", "nvidia-smi")) or
                                           _runtime_read(line) for line in trip):
            continue
        out.append(trip)
    return out


def _runtime_read(line: str) -> bool:
    """A read of HAProxy's runtime API (`show ...`): how often a wait looks is timing too."""
    return line.startswith("unix-socket ") and " show " in line


def matches(actual: list[list[str]], expected: list[list[str]]) -> bool:
    if len(actual) != len(expected):
        return False
    for got, want in zip(actual, expected, strict=True):
        if len(got) != len(want) or not all(fnmatch.fnmatchcase(g, w) for g, w in zip(got, want, strict=True)):
            return False
    return True


def current_after(transport: ReplayTransport, previous: str) -> str:
    current = previous
    for trip in transport.round_trips:
        for line in trip:
            if line.startswith("switch-symlink releases/"):
                current = line.split()[1].removeprefix("releases/")
    return current


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path, tmp_path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    fleet = ReplayFleet(project_with(case.get("inventory"), tmp_path) if case.get("inventory") else None)
    fleet.set_hub(case.get("hub", "up"))   # what the hub says `main` names (replay_fleet.set_hub)
    nodes = {n: node_case(n, spec or {}) for n, spec in (case.get("nodes") or {}).items()}
    expect = case["expect"]
    interrupts = Interrupts()
    for node, spec in nodes.items():
        fleet.node(node, spec)
    for sig in case.get("signals", []):  # a signal arrives right after the Nth command of a kind
        on_command(fleet.transports[sig["node"]], sig["after"], sig.get("nth", 1),
                   lambda s=sig: interrupts.request(getattr(signal, f"SIG{s['signal']}")))
    try:
        result = fleet.deploy(phases=case.get("phases"), limit=case.get("limit"), check=case.get("check", False),
                              state_dir=tmp_path, nodes=nodes, interrupts=interrupts)
        code, message = 0, ""
    except SwarmError as exc:
        result, code, message = None, exc.exit_code, str(exc)
    assert code == expect["exit"], message
    if "error" in expect:
        assert expect["error"] in message, message
    if "contains" in expect:
        assert expect["contains"] in message, message
    if "report" in expect:
        assert result is not None and expect["report"] in result.check_report, result.check_report
    transports = fleet.transports
    for node, trips in expect["round_trips"].items():
        want = [[substitute(line, transports) for line in trip] for trip in trips]
        got = collapsed(transports[node].round_trips)
        assert matches(got, want), f"{node}:\n  got:  " + "\n        ".join(map(str, got)) + \
            "\n  want: " + "\n        ".join(map(str, want))
    for node in set(transports) - set(expect["round_trips"]):
        assert len(transports[node].round_trips) <= 1, f"{node} was asked more than the look"
    for node, want in (expect.get("current") or {}).items():
        previous = str(release_record(node)["id"])
        assert current_after(transports[node], previous) == substitute(want, transports)
    pending_file = tmp_path / "pending-unwind-ai-swarm.json"
    if "pending" in expect:
        record = json.loads(pending_file.read_text())
        assert sorted(record["nodes"]) == sorted(expect["pending"]), record
    else:
        assert not pending_file.exists(), pending_file.read_text()
