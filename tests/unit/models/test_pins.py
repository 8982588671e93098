"""Pins in the render (the vLLM role's weights block) and the short-lived key of a direct copy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.models.disk import GB, node_disks
from orchestrator.models.transfer import authorized_line
from orchestrator.render.fleet import render_fleet
from orchestrator.render.pins import recorded_models, release_compose
from orchestrator.render.services import build_services
from orchestrator.render.weights import WeightsPin, parse_pin, pin_for

REPO = Path(__file__).resolve().parents[3]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def pinned_project(tmp_path: Path, revisions: dict[str, str], **node_facts: object):  # noqa: ANN201
    data = yaml.safe_load((REPO / "inventory" / "swarm.yml").read_text())
    for node in data["nodes"].values():
        for svc in (node.get("services") or {}).values():
            if svc.get("model") in revisions:
                svc["revision"] = revisions[svc["model"]]
    for node, facts in node_facts.items():
        data["nodes"][node].update(facts)  # type: ignore[arg-type]
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return load_project(REPO, path, None)


def test_a_pinned_instance_serves_its_staged_revision_read_only_and_offline(tmp_path: Path) -> None:
    project = pinned_project(tmp_path, {"TheBloke/Mistral-7B-Instruct-v0.2-GPTQ": COMMIT})
    svc = next(s for s in build_services(project) if s.name == "vllm-backup")
    assert svc.weights == WeightsPin("TheBloke/Mistral-7B-Instruct-v0.2-GPTQ", COMMIT)
    command = svc.compose["command"]
    assert command[command.index("--model") + 1] == "/models/TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
    assert command[command.index("--served-model-name") + 1] == "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
    assert f"/opt/ai-swarm/models/TheBloke/Mistral-7B-Instruct-v0.2-GPTQ/{COMMIT}:" \
           "/models/TheBloke/Mistral-7B-Instruct-v0.2-GPTQ:ro" in svc.compose["volumes"]
    assert svc.compose["environment"]["HF_HUB_OFFLINE"] == "1"


def test_an_instance_on_main_is_served_from_the_store_offline_too(tmp_path: Path) -> None:
    """The render names the branch's directory (the release's compose names the commit staging
    resolved it to: render/pins.pin_weights); the server never gets a hub id or the hub."""
    svc = next(s for s in build_services(load_project(REPO)) if s.name == "vllm-backup")
    assert svc.weights is not None and svc.weights.moving
    command = svc.compose["command"]
    assert command[command.index("--model") + 1] == "/models/TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
    assert "/opt/ai-swarm/models/TheBloke/Mistral-7B-Instruct-v0.2-GPTQ/main:" \
           "/models/TheBloke/Mistral-7B-Instruct-v0.2-GPTQ:ro" in svc.compose["volumes"]
    assert svc.compose["environment"]["HF_HUB_OFFLINE"] == "1"
    assert svc.compose["environment"]["TRANSFORMERS_OFFLINE"] == "1"


def test_the_service_revision_beats_the_catalogue_and_a_bad_one_names_the_file(tmp_path: Path) -> None:
    assert pin_for("org/m", None, {"org/m": COMMIT}) == WeightsPin("org/m", COMMIT)
    assert pin_for("org/m", "f" * 40, {"org/m": COMMIT}) == WeightsPin("org/m", "f" * 40)
    assert pin_for("org/m@" + "e" * 40, None, {}) == WeightsPin("org/m", "e" * 40)
    assert pin_for("./models/local", None, {}) is None
    with pytest.raises(ValueError):
        parse_pin("org/m@rev;rm -rf /")
    project = pinned_project(tmp_path, {"TheBloke/Mistral-7B-Instruct-v0.2-GPTQ": "bad revision!"})
    with pytest.raises(InputError) as err:
        build_services(project)
    assert "revision" in str(err.value) and "inventory.yml" in str(err.value)


def test_the_direct_copys_key_does_one_thing_from_one_address_for_a_day() -> None:
    forced = "sh -c 'rm -rf -- \"$1\" && mkdir -p -- \"$1\" && tar -C \"$1\" -xf -' sh '/opt/x y/m.tmp'"
    line = authorized_line("ssh-ed25519 AAAAC3Nz", forced, "198.18.1.2", "swarm-stage-ab12", now=0)
    assert line.startswith('restrict,from="198.18.1.2",expiry-time="197001020200",command="sh -c ')
    assert '\\"$1\\"' in line and line.endswith(" ssh-ed25519 AAAAC3Nz swarm-stage-ab12\n")
    assert "from=" not in authorized_line("ssh-ed25519 A", "true", "starlord.tail.net", "m")
    with pytest.raises(ValueError):
        authorized_line("ssh-ed25519 A", "true\nssh-rsa B", "198.18.1.2", "m")


def test_plan_refuses_weights_that_do_not_fit_naming_node_and_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path / "state"))
    project = pinned_project(tmp_path, {"TheBloke/Mistral-7B-Instruct-v0.2-GPTQ": COMMIT},
                             thanos={"disk_gb": 8})
    record = {"nodes": {}, "sizes": {f"TheBloke/Mistral-7B-Instruct-v0.2-GPTQ@{COMMIT}": 4_200_000_000}}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / f"models-{project.inventory.fleet}.json").write_text(json.dumps(record))
    disks = {d.node: d for d in node_disks(project, build_services(project), {})}
    assert disks["thanos"].total_bytes == 4_200_000_000
    problem = disks["thanos"].problem(10.0)
    assert problem is not None and problem.startswith("thanos: ")
    assert "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ@0123456789ab 4.20 GB" in problem
    assert re.search(r"8\.00 GB is free \(the inventory's disk_gb", problem)
    assert disks["starlord"].problem(10.0) is None   # 900 GB
    assert disks["starlord"].free_bytes == 900 * GB


def test_a_release_compose_mounts_the_commit_its_release_records_for_that_service_only() -> None:
    """render/pins.release_compose: the image by its digest, the moving revision by its commit —
    each inside its own service's block (another instance of the same model keeps what it records)."""
    project = load_project(REPO)
    render = render_fleet(project, for_node=True).nodes["starlord"]
    services = list(render.services)
    model = "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ"
    release = {"models": {"vllm-secondary": {"repo": model, "revision": COMMIT}},
               "images": {"vllm-secondary": "vllm/vllm-openai@sha256:" + "a" * 64}}
    text = release_compose(render.files["compose.yml"], services, {"vllm-secondary": release["images"]["vllm-secondary"]},
                           recorded_models(release), lambda _node: "/opt/ai-swarm")
    compose = yaml.safe_load(text)["services"]
    secondary, primary = compose["vllm-secondary"], compose["vllm-primary"]
    assert f"/opt/ai-swarm/models/{model}/{COMMIT}:/models/{model}:ro" in secondary["volumes"]
    assert secondary["image"] == "vllm/vllm-openai:v0.6.3@sha256:" + "a" * 64
    assert any(v.endswith("/main:/models/casperhansen/mistral-nemo-instruct-2407-awq:ro") for v in primary["volumes"])
    assert recorded_models({"models": {"x": {"repo": "", "revision": COMMIT}, "y": "junk"}}) == {}
