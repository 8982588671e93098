"""`swarm rollback` as data: which release a phase goes back to, what the node is told, and what
it never is (a protected service in a compose command; another phase's releases)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config.project import load_project
from orchestrator.engine.consul import ConsulSync
from orchestrator.engine.context import Boundaries
from orchestrator.engine.pending import Pending, PendingNode, PendingStore
from orchestrator.engine.resume import resume_pending
from orchestrator.engine.rollback import Rollback, RollbackOptions, find_target, merged_compose
from orchestrator.engine.signals import Interrupts
from orchestrator.errors import InputError, SwarmError
from orchestrator.events import EventBus
from orchestrator.facts.node import NodeState
from orchestrator.render.fleet import render_fleet
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.replay import Answer, ReplayTransport
from tests.unit.engine.replay_fleet import (
    COMMIT,
    REPO,
    WEIGHTS_FILE,
    WEIGHTS_SHA,
    ReplayFleet,
    healthy_network,
    on_command,
    store_listing,
)
from tests.unit.lab_answers import answer, docker_ps, states

PHASE3 = ("qdrant", "vllm-primary", "vllm-secondary", "gpu-monitor")


def record(rid: str, phase: int, applied: dict[str, str], **extra: Any) -> dict[str, Any]:
    services = {k: v for k, v in applied.items() if k in PHASE3} if phase == 3 else {}
    return {"id": rid, "node": "starlord", "phase": phase, "by": "tester", "applied": applied,
            "services": services, "created": rid[:15], **extra}


def releases(*records: dict[str, Any], current: str) -> Answer:
    lines = [f"releases/{current}"] + [json.dumps(r) for r in records]
    return Answer(0, "\n".join(lines) + "\n")


def compose(fleet: ReplayFleet, change_secondary: bool = False) -> str:
    text = fleet.render.nodes["starlord"].files["compose.yml"].decode()
    data = yaml.safe_load(text)
    if change_secondary:
        data["services"]["vllm-secondary"]["command"] = ["--max-num-seqs", "4"]
    return "swarm:present\n" + yaml.safe_dump(data).replace("/main:/models/", f"/{COMMIT}:/models/")  # as released


def secondary_image(fleet: ReplayFleet) -> str:
    return str(yaml.safe_load(fleet.render.nodes["starlord"].files["compose.yml"])["services"]["vllm-secondary"]["image"])


def starlord(fleet: ReplayFleet, manifests: Answer, current: dict[str, Any], texts: list[str]) -> ReplayTransport:
    transport = ReplayTransport("starlord", replies={
        "look-lock": Answer(0, "locked\n"),
        "read-file": [Answer(0, "swarm:present\n" + json.dumps(current)), *(Answer(0, t) for t in texts)],
        "list-releases": Answer(0, "\n".join(json.loads(line)["id"] for line in manifests.stdout.splitlines()[1:]) + "\n"),
        "release-manifests": manifests,
        "docker-ps": Answer(0, docker_ps("starlord")),
        "container-states": states("starlord"),
        "node-clock": answer("starlord", "node-clock"),
        # the weights the target release mounts, staged and checked (models/run.before_rollback)
        "models-list": Answer(0, store_listing(fleet.staged("starlord").values(), fleet.project.inventory.node("starlord"))),
        "models-hash": Answer(0, f"{WEIGHTS_SHA} *{WEIGHTS_FILE}\n"),
    })
    fleet.transports["starlord"] = transport
    return transport


def run_rollback(fleet: ReplayFleet, tmp_path: Path, to: str | None = None,
                 interrupts: Interrupts | None = None) -> dict[str, str]:
    bus = EventBus()
    door = fleet.node("oracle")  # the front door: a rolling instance is drained there first
    world = Boundaries(fleet=Fleet([fleet.transports["starlord"], door]), state_dir=tmp_path, secrets=fleet.secrets,
                       consul=ConsulSync(addr=None, fleet="ai-swarm", bus=bus),
                       network=healthy_network(fleet.project, fleet.render))
    run = Rollback(fleet.project, RollbackOptions(phase=3, limit="starlord", to=to, by="tester"), bus,
                   world=world, interrupts=interrupts)
    return asyncio.run(run.run())


@pytest.fixture
def fleet() -> ReplayFleet:
    return ReplayFleet()


def test_a_phase_right_after_its_first_deploy_has_nothing_of_its_own_to_go_back_to(fleet, tmp_path) -> None:
    """The phase-1 release before it is another phase's: refused, nothing removed (Qdrant above all)."""
    wanted = fleet.wanted("starlord")
    r0 = record("20261201T100000Z-aaaaaaaa", 1, {})
    r1 = record("20261201T110000Z-bbbbbbbb", 3, wanted)
    transport = starlord(fleet, releases(r0, r1, current=r1["id"]), r1, [])
    with pytest.raises(InputError, match="phase 3 has no release before 20261201T110000Z-bbbbbbbb"):
        run_rollback(fleet, tmp_path)
    assert not any("compose" in line for trip in transport.round_trips for line in trip)
    assert transport.round_trips[-1][-1].startswith("unlock-if-mine")


def test_rollback_brings_back_only_what_differs_and_never_names_qdrant(fleet, tmp_path) -> None:
    wanted = fleet.wanted("starlord")
    r0 = record("20261201T100000Z-aaaaaaaa", 1, {})
    r1 = record("20261201T110000Z-bbbbbbbb", 3, {**wanted, "vllm-secondary": "1111111111111111",
                                                  "qdrant": "2222222222222222"})
    r2 = record("20261201T120000Z-cccccccc", 3, wanted)
    transport = starlord(fleet, releases(r0, r1, r2, current=r2["id"]), r2,
                         [compose(fleet), compose(fleet, change_secondary=True)])
    done = run_rollback(fleet, tmp_path)
    new = done["starlord"]
    assert new > r2["id"]
    trips = transport.round_trips
    apply = next(t for t in trips if t and t[0].startswith("remove-stale-tmp"))
    assert apply[1:3] == [f"copy-release /opt/ai-swarm {r2['id']} {new}",
                          f"take-services /opt/ai-swarm {r1['id']} {new} vllm-primary vllm-secondary gpu-monitor"]
    # the image it brings back is on the node (checked before anything changes: the target's digest,
    # no registry asked when it is there); vLLM rolls without a pull: drained and swapped on its own
    image = secondary_image(fleet)
    assert trips.index([f"images-present {image}"]) < trips.index(apply)
    assert not any(" pull " in line for trip in trips for line in trip)
    assert ["date +%s", f"docker compose -p swarm-starlord -f /opt/ai-swarm/releases/{new}/compose.yml "
            "up -d -- vllm-secondary"] in trips
    door = fleet.transports["oracle"].described()
    assert door[0].endswith("set server model_TheBloke--Mistral-7B-Instruct-v0.2-GPTQ/vllm-secondary state drain")
    assert not any("qdrant" in line for trip in trips for line in trip if line.startswith("docker compose"))
    switch = next(t for t in trips if t and t[0].startswith("switch-symlink"))
    assert switch[0] == f"switch-symlink releases/{new} /opt/ai-swarm/current"
    uploaded = _tar_record(transport)
    assert uploaded["rolled_back_to"] == r1["id"] and uploaded["previous"] == r2["id"]
    assert uploaded["applied"]["vllm-secondary"] == "1111111111111111"
    assert uploaded["applied"]["qdrant"] == wanted["qdrant"]  # protected: as it runs, not as it was


def test_an_image_neither_on_the_node_nor_pullable_stops_the_rollback_naming_it(fleet, tmp_path) -> None:
    """The registry is down and the node lost the target's image: refused before any change, the
    message names the image and its service and says what to do."""
    wanted = fleet.wanted("starlord")
    r0 = record("20261201T100000Z-aaaaaaaa", 1, {})
    r1 = record("20261201T110000Z-bbbbbbbb", 3, {**wanted, "vllm-secondary": "1111111111111111"})
    r2 = record("20261201T120000Z-cccccccc", 3, wanted)
    transport = starlord(fleet, releases(r0, r1, r2, current=r2["id"]), r2,
                         [compose(fleet), compose(fleet, change_secondary=True)])
    image = secondary_image(fleet)
    transport.replies["images-present"] = Answer(1, f"missing-image {image}\n")
    with pytest.raises(SwarmError) as err:
        run_rollback(fleet, tmp_path)
    text = str(err.value)
    assert f"{image} (vllm-secondary)" in text and "nothing was changed" in text
    assert "start the registry" in text and "docker pull" in text
    assert not any(line.startswith(("remove-stale-tmp", "docker compose", "switch-symlink"))
                   for trip in transport.round_trips for line in trip)
    assert transport.round_trips[-1][-1].startswith("unlock-if-mine")


def test_rolling_back_again_goes_further_back_not_forth(fleet, tmp_path) -> None:
    """After rolling phase 3 back from C to B (release D runs B), the next rollback goes to A."""
    wanted = fleet.wanted("starlord")
    a = record("20261201T100000Z-aaaaaaaa", 3, {**wanted, "gpu-monitor": "aaaaaaaaaaaaaaaa"})
    b = record("20261201T110000Z-bbbbbbbb", 3, {**wanted, "gpu-monitor": "bbbbbbbbbbbbbbbb"})
    c = record("20261201T120000Z-cccccccc", 3, wanted)
    d = record("20261201T130000Z-dddddddd", 3, b["applied"], rolled_back_to=b["id"], action="rollback")
    state = NodeState(node="starlord", current=d, releases=tuple(r["id"] for r in (a, b, c, d)),
                      manifests=(a, b, c, d))
    assert find_target("starlord", state, 3, None).release["id"] == a["id"]
    with pytest.raises(InputError, match="no release 'nope' of phase 3"):
        find_target("starlord", state, 3, "nope")


def test_merged_compose_takes_some_services_from_the_target() -> None:
    current = yaml.safe_dump({"services": {"a": {"image": "a:2"}, "b": {"image": "b:2"}, "q": {"image": "q:1"}},
                              "networks": {"n": {}}})
    target = yaml.safe_dump({"services": {"a": {"image": "a:1"}}, "volumes": {"v": {}}})
    merged = yaml.safe_load(merged_compose(current, target, ["a"], ["b"]).decode())
    assert merged["services"] == {"a": {"image": "a:1"}, "q": {"image": "q:1"}}
    assert set(merged["volumes"]) == {"v"} and set(merged["networks"]) == {"n"}


def test_a_rollback_to_what_the_inventory_renders_is_that_render_byte_for_byte() -> None:
    """Every service taken back from a release the render wrote: the result is that release's
    compose, header included (`swarm verify` compares the files' hashes with the render)."""
    text = render_fleet(load_project(REPO)).nodes["starlord"].files["compose.yml"].decode()
    changed = yaml.safe_load(text)
    changed["services"]["gpu-monitor"]["environment"] = {"X": "1"}
    current = "# an older header\n" + yaml.safe_dump(changed, sort_keys=False)
    assert merged_compose(current, text, list(changed["services"]), []) == text.encode()


def test_resume_finishes_a_cut_off_unwind_from_the_pending_record(fleet, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path))
    store = PendingStore(tmp_path, "ai-swarm")
    undo = [["sh", "-c", 'rm -rf -- "$1/releases/$2"', "sh", "/opt/ai-swarm", "20261201T130000Z-dddddddd"]]
    store.save(Pending(run_id="abc123", by="tester", action="deploy", phase=3, reason="interrupted",
                       nodes={"starlord": PendingNode(node="starlord", undo=undo, restore=[],
                                                      failed_release="20261201T130000Z-dddddddd",
                                                      previous="20261201T120000Z-cccccccc")}))
    transport = ReplayTransport("starlord", replies={"look-lock": Answer(0, "locked\n"),
                                                     "read-file": Answer(0, "swarm:missing\n")})
    world = Boundaries(fleet=Fleet([transport]), consul=ConsulSync(addr=None, fleet="ai-swarm", bus=EventBus()))
    done = asyncio.run(resume_pending(fleet.project, EventBus(), limit_to=None, interrupts=Interrupts(),
                                      required=True, world=world))
    assert done and store.load() is None
    look = transport.round_trips[0][0]
    assert look.startswith("look-lock /opt/ai-swarm") and " abc123 1 " in look  # the cut-off run's own lock
    assert transport.round_trips[1][0].endswith("20261201T130000Z-dddddddd")
    assert transport.round_trips[1][-1] == "append-file /opt/ai-swarm/audit.log"
    assert transport.round_trips[-1] == ["unlock-if-mine /opt/ai-swarm abc123"]


def test_the_pending_record_of_a_run_still_alive_is_not_resumed(fleet, tmp_path, monkeypatch) -> None:
    """A deploy that is moving nodes keeps its pending record up to date; a second swarm on
    the same controller must not "finish" it (it would adopt that run's lock): exit 4, no SSH."""
    import socket
    import subprocess
    import sys

    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path))
    store = PendingStore(tmp_path, "ai-swarm")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store.save(Pending(run_id="live1", by="tester", action="deploy", phase=4, pid=other.pid,
                           host=socket.gethostname(),
                           nodes={"thanos": PendingNode(node="thanos", undo=[["true"]], restore=[])}))
        thanos = ReplayTransport("thanos")
        with pytest.raises(SwarmError) as err:
            asyncio.run(resume_pending(fleet.project, EventBus(), limit_to=None, interrupts=Interrupts(),
                                       world=Boundaries(fleet=Fleet([thanos]))))
        assert thanos.round_trips == [] and thanos.stats.connections == 0  # nothing asked of the node
        assert err.value.exit_code == 4 and "another deploy holds the lock of phase 4" in str(err.value)
        assert store.load() is not None  # its owner clears it
    finally:
        other.kill()
        other.wait()
    assert not store.load().still_running()  # once it is gone, the record is a cut-off run's


def test_a_signal_during_a_rollback_unwinds_it(fleet, tmp_path) -> None:
    wanted = fleet.wanted("starlord")
    r1 = record("20261201T110000Z-bbbbbbbb", 3, {**wanted, "vllm-secondary": "1111111111111111"})
    r2 = record("20261201T120000Z-cccccccc", 3, wanted)
    transport = starlord(fleet, releases(r1, r2, current=r2["id"]), r2,
                         [compose(fleet), compose(fleet, change_secondary=True)])
    interrupts = Interrupts()
    on_command(transport, "container-states", 1, lambda: interrupts.request(signal.SIGTERM))
    with pytest.raises(SwarmError) as err:
        run_rollback(fleet, tmp_path, interrupts=interrupts)
    assert err.value.exit_code == 143
    # the rolled instance comes back first, drained again in the front door, then the upload goes
    unwind = next(t for t in transport.round_trips if t and t[0] == "date +%s"
                  and t[-1].endswith(f"releases/{r2['id']}/compose.yml up -d -- vllm-secondary"))
    undo = next(t for t in transport.round_trips if t and t[-1] == "append-file /opt/ai-swarm/audit.log")
    assert transport.round_trips.index(unwind) < transport.round_trips.index(undo)
    assert undo[0].startswith("remove-release /opt/ai-swarm ")


def _tar_record(transport: ReplayTransport) -> dict[str, Any]:
    import io
    import tarfile

    data = next(i for i in transport.inputs if i and b"/release.json" in i)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/release.json"))
        return dict(json.loads(tar.extractfile(member).read()))  # type: ignore[union-attr]


def test_rollback_forget_drops_a_record_that_cannot_finish(tmp_path, monkeypatch) -> None:
    """The node was rebuilt by hand; the resume keeps failing: `swarm rollback --forget`
    drops the record, says what it dropped, and the next deploy no longer tries it."""
    from click.testing import CliRunner

    from orchestrator.cli.main import main

    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path))
    store = PendingStore(tmp_path, "ai-swarm")
    store.save(Pending(run_id="gone1", by="tester", action="deploy", phase=3, pid=2**22 + 7, host="elsewhere",
                       nodes={"starlord": PendingNode(node="starlord", undone=True, restore=["vllm-primary"])}))
    repo = Path(__file__).resolve().parents[3]
    result = CliRunner().invoke(main, ["--project", str(repo), "rollback", "--forget"])
    assert result.exit_code == 0, result.output
    assert "forgot the unfinished rollback of phase 3 that run gone1 left on starlord" in result.output
    assert store.load() is None
    again = CliRunner().invoke(main, ["--project", str(repo), "rollback", "--forget"])
    assert again.exit_code == 0 and "no unfinished rollback recorded" in again.output
