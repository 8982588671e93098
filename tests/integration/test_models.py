"""Model weights in the fleet, on the lab (docs/models.md): staged from a peer with 0 bytes from the hub,
a deploy with the hub down, a corrupted shard stopping a deploy before any container changes,
gc never touching what a kept release mounts, and CUDA against the driver.

Shares the deployed reference fleet (phases 1-4) and leaves it as it found it: the extra model
it stages is collected again, the corrupted shard repaired, the driver put back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.config.project import load_project
from orchestrator.events import EventBus
from orchestrator.lab import hub as lab_hub
from orchestrator.lab import registry as lab_registry
from orchestrator.models.stage import Needs, Outcome, Stager
from orchestrator.render.weights import WeightsPin
from orchestrator.transport.fleet import Fleet
from tests.integration.labtools import REPO, node_sh, ok, quick_inventory, swarm

pytestmark = pytest.mark.lab

BACKUP_MODEL = "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
EXTRA = "lab/extra-model"


@pytest.fixture(scope="module")
def fleet(deployed):  # noqa: ANN001, ANN201 - the lab
    yield deployed


def stage(lab, node_pins: dict[str, WeightsPin]) -> Outcome:  # noqa: ANN001
    project = load_project(REPO, lab.inventory_path)
    needs = Needs()
    for node, pin in node_pins.items():
        needs.by_node.setdefault(node, {})[pin] = ["test"]

    async def run() -> Outcome:
        nodes = [project.inventory.node(n) for n in ("oracle", "starlord", "thanos")]
        async with Fleet.for_nodes(project.inventory, nodes) as fleet:
            await fleet.connect()
            return await Stager(project, fleet, EventBus()).run(needs)

    return asyncio.run(run())


def containers(lab, node: str) -> str:  # noqa: ANN001
    """Every container of the node's project: id, state, start time (what a change would move)."""
    return node_sh(lab, node, "sh", "-c", "docker ps -aq | sort | xargs docker inspect -f "
                   "'{{.Name}} {{.Id}} {{.State.Status}} {{.State.StartedAt}}'")


def stored_revision(lab, node: str) -> str:  # noqa: ANN001
    out = node_sh(lab, node, "sh", "-c", f"ls -d /opt/ai-swarm/models/{BACKUP_MODEL}/*/")
    return out.split()[0].rstrip("/").rsplit("/", 1)[1]


def test_a_node_gets_a_model_from_a_node_that_holds_it_and_nothing_from_the_hub(fleet) -> None:  # noqa: ANN001
    commit = fleet.make_model(EXTRA, 3)
    pin = WeightsPin(EXTRA, commit)
    first = stage(fleet, {"starlord": pin})
    assert [(c[0], c[2]) for c in first.copied] in ([("starlord", "hub")], [("starlord", "mirror")])
    before = fleet.hub_stats()["bytes_served"]
    second = stage(fleet, {"thanos": pin})
    assert fleet.hub_stats()["bytes_served"] == before           # 0 bytes from the hub
    assert [(c[0], c[2]) for c in second.copied] == [("thanos", "starlord (direct)")]
    assert second.copied[0][3] == first.copied[0][3] >= 3_000_000
    listing = json.loads(ok(swarm(fleet, "models", "ls", "--output", "json")).stdout)
    revisions = {r["pin"] for r in listing["thanos"]["revisions"]}
    assert f"{EXTRA}@{commit}" in revisions


def test_gc_dry_run_lists_only_what_no_kept_release_mounts(fleet) -> None:  # noqa: ANN001
    kept = stored_revision(fleet, "thanos")
    dry = ok(swarm(fleet, "models", "gc", "--dry-run", "--limit", "thanos")).stdout
    assert f"/models/{EXTRA}/" in dry and f"/models/{BACKUP_MODEL}/{kept}" not in dry
    assert "would remove 1" in dry
    ok(swarm(fleet, "models", "gc", "--limit", "starlord,thanos"))
    after = ok(swarm(fleet, "models", "ls", "--output", "json")).stdout
    assert EXTRA not in after and f"{BACKUP_MODEL}@{kept}" in after


@pytest.fixture
def hub_down(fleet) -> Iterator[None]:  # noqa: ANN001
    lab_hub.stop(fleet.paths)
    try:
        yield
    finally:
        lab_hub.start(fleet.paths)


def test_a_deploy_with_the_hub_down_restarts_a_staged_model(fleet, hub_down: None, tmp_path: Path) -> None:  # noqa: ANN001
    assert not lab_hub.ping()
    node_sh(fleet, "thanos", "docker", "stop", "swarm-thanos-vllm-backup-1")
    result = ok(swarm(fleet, "deploy", "--phase", "4", inventory=quick_inventory(fleet, tmp_path)))
    assert "vllm-backup" in result.stderr and "every sha256 checked" not in result.stderr
    logs = node_sh(fleet, "thanos", "sh", "-c", "docker logs swarm-thanos-vllm-backup-1 2>&1 | grep ' loaded '")
    assert f"from /models/{BACKUP_MODEL} (HF_HUB_OFFLINE=1)" in logs.splitlines()[-1]


def test_a_corrupted_shard_stops_the_deploy_naming_it_before_any_container_changes(fleet, tmp_path: Path) -> None:  # noqa: ANN001
    revision = stored_revision(fleet, "thanos")
    shard = f"/opt/ai-swarm/models/{BACKUP_MODEL}/{revision}/model-00001-of-00002.safetensors"
    node_sh(fleet, "thanos", "sh", "-c", f"printf 'X' | dd of={shard} bs=1 seek=4096 conv=notrunc 2>/dev/null")
    node_sh(fleet, "thanos", "docker", "stop", "swarm-thanos-vllm-backup-1")
    before = containers(fleet, "thanos")
    failed = swarm(fleet, "deploy", "--phase", "4")
    assert failed.returncode == 1, failed.stderr
    assert "model-00001-of-00002.safetensors" in failed.stderr and "nothing was changed" in failed.stderr
    assert containers(fleet, "thanos") == before                  # 0 containers changed
    repaired = ok(swarm(fleet, "models", "stage", "--limit", "thanos")).stdout
    assert "thanos: " in repaired and "from " in repaired
    ok(swarm(fleet, "deploy", "--phase", "4", inventory=quick_inventory(fleet, tmp_path)))


@pytest.fixture
def old_driver(fleet) -> Iterator[None]:  # noqa: ANN001
    fleet.set_gpu("thanos", driver="535.54.03")
    try:
        yield
    finally:
        fleet.set_gpu("thanos", driver="550.54.15")


def test_an_image_needing_a_newer_cuda_than_the_driver_is_refused_by_preflight(fleet, old_driver: None) -> None:  # noqa: ANN001
    report = swarm(fleet, "preflight", "--phase", "4", "--limit", "thanos", "--output", "json")
    assert report.returncode != 0
    failed = [r for r in json.loads(report.stdout)["results"] if r["status"] == "fail"]
    cuda = [r for r in failed if r["check"] == "cuda"]
    assert len(cuda) == 1 and cuda[0]["node"] == "thanos", failed
    message = cuda[0]["message"]
    assert "needs CUDA 12.4" in message and "535.54.03 supports at most CUDA 12.2" in message
    assert "vllm/vllm-openai:v0.4.0" in message


PROBE = "v0.6.3-pinprobe"


def _retag(source: str, tag: str) -> str:
    """Point `vllm/vllm-openai:<tag>` at the index `source` names (this test's own tag); its digest."""
    status, media, body = lab_registry.get_manifest("vllm/vllm-openai", source)
    assert status == 200, media
    with httpx.Client() as http:
        answer = http.put(f"http://{lab_registry.REGISTRY}/v2/vllm/vllm-openai/manifests/{tag}", content=body,
                          headers={"Content-Type": media})
    assert answer.status_code == 201, answer.text
    return str(answer.headers["Docker-Content-Digest"])


def test_a_moved_tag_is_a_change_the_deploy_sees_and_the_release_pins(fleet, tmp_path: Path) -> None:  # noqa: ANN001
    first = _retag("v0.6.3", PROBE)

    def probe(data: dict) -> None:  # type: ignore[type-arg]
        data["nodes"]["thanos"]["services"]["vllm-backup"]["image_tag"] = PROBE

    inventory = quick_inventory(fleet, tmp_path, probe, name="probe.yml")
    try:
        ok(swarm(fleet, "deploy", "--phase", "4", inventory=inventory))
        assert "nothing to change" in ok(swarm(fleet, "deploy", "--phase", "4", inventory=inventory)).stderr
        compose = node_sh(fleet, "thanos", "cat", "/opt/ai-swarm/current/compose.yml")
        assert f"vllm/vllm-openai:{PROBE}@{first}" in compose
        moved = _retag("v0.4.0", PROBE)
        assert moved != first
        result = ok(swarm(fleet, "deploy", "--phase", "4", inventory=inventory))
        assert "image moved" in result.stderr and "vllm-backup" in result.stderr
        release = json.loads(node_sh(fleet, "thanos", "cat", "/opt/ai-swarm/current/release.json"))
        assert release["images"]["vllm-backup"].endswith(f"@{moved}")
        running = node_sh(fleet, "thanos", "docker", "inspect", "-f", "{{.Config.Image}}", "swarm-thanos-vllm-backup-1")
        assert running.strip().endswith(f"@{moved}")
    finally:
        ok(swarm(fleet, "deploy", "--phase", "4", inventory=quick_inventory(fleet, tmp_path)))


def test_a_model_on_main_is_staged_at_its_commit_and_a_moved_main_is_a_change(fleet, tmp_path: Path) -> None:  # noqa: ANN001
    """vllm-backup follows `main` (the shipped catalogue's case): the deploy stages the commit the hub
    names and the release mounts it; main moves on the hub -> the next deploy applies it again with the
    new commit; the hub stopped -> no change, said once. The lab's commit pin and main are put back."""
    refs = lab_hub.root(fleet.paths) / BACKUP_MODEL / "refs" / "main"
    was = refs.read_text().strip()

    def on_main(data: dict) -> None:  # type: ignore[type-arg]
        data["nodes"]["thanos"]["services"]["vllm-backup"]["revision"] = "main"

    inventory = quick_inventory(fleet, tmp_path, on_main, name="on-main.yml")

    def served() -> tuple[str, str]:
        release = json.loads(node_sh(fleet, "thanos", "cat", "/opt/ai-swarm/current/release.json"))
        mounts = node_sh(fleet, "thanos", "docker", "inspect", "-f", "{{range .Mounts}}{{.Source}} {{end}}",
                         "swarm-thanos-vllm-backup-1")
        return release["models"]["vllm-backup"]["revision"], mounts

    try:
        ok(swarm(fleet, "deploy", "--phase", "4", inventory=inventory))
        revision, mounts = served()
        assert revision == was and f"/models/{BACKUP_MODEL}/{was}" in mounts and "/main" not in mounts
        moved = fleet.make_model(BACKUP_MODEL, 3.3)   # main moves on the hub
        assert moved != was
        result = ok(swarm(fleet, "deploy", "--phase", "4", inventory=inventory))
        assert "weights moved" in result.stderr and "vllm-backup" in result.stderr
        revision, mounts = served()
        assert revision == moved and f"/models/{BACKUP_MODEL}/{moved}" in mounts
        lab_hub.stop(fleet.paths)
        try:
            quiet = ok(swarm(fleet, "deploy", "--phase", "4", inventory=inventory))
            assert quiet.stderr.count("the hub did not say") == 1 and "nothing to change" in quiet.stderr
            assert served()[0] == moved
            # staging by hand with the hub down keeps the commit the node serves (nothing to fetch)
            staged = ok(swarm(fleet, "models", "stage", "--phase", "4", "--limit", "thanos", inventory=inventory))
            assert "placement(s) staged and checked" in staged.stdout and "the hub did not say" in staged.stderr
        finally:
            lab_hub.start(fleet.paths)
    finally:
        refs.write_text(was + "\n")
        # the lab inventory's commit pin again
        ok(swarm(fleet, "deploy", "--phase", "4", inventory=quick_inventory(fleet, tmp_path)))
