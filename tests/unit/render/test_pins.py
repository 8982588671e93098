"""Images pinned per release: the release's compose names tag@digest; a moved tag is a change."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.config.project import load_project
from orchestrator.render.fleet import render_fleet
from orchestrator.render.pins import moved_images, pin_compose, recorded_images

REPO = Path(__file__).resolve().parents[3]
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def test_the_release_compose_names_each_image_by_its_digest_and_nothing_else_moves() -> None:
    render = render_fleet(load_project(REPO), ["thanos"], for_node=True).nodes["thanos"]
    original = render.files["compose.yml"]
    pins = {s.name: (s.image, f"docker.io/{s.image}@{DIGEST}") for s in render.services if s.name == "vllm-backup"}
    pinned = pin_compose(original, pins)
    doc, before = yaml.safe_load(pinned), yaml.safe_load(original)
    assert doc["services"]["vllm-backup"]["image"] == f"vllm/vllm-openai:v0.6.3@{DIGEST}"
    doc["services"]["vllm-backup"]["image"] = before["services"]["vllm-backup"]["image"]
    assert doc == before                                   # only that one line changed
    assert pin_compose(pinned, pins) == pinned             # an image already pinned keeps its digest


def test_a_tag_that_names_another_digest_than_the_node_runs_is_a_change() -> None:
    services = [s for s in render_fleet(load_project(REPO), ["thanos"]).nodes["thanos"].services
                if s.name in ("vllm-backup", "sillytavern")]
    current = {"images": {"vllm-backup": f"docker.io/vllm/vllm-openai@{DIGEST}",
                          "sillytavern": f"ghcr.io/sillytavern/sillytavern@{DIGEST}"}}
    recorded = recorded_images(current)
    moved = moved_images(services, recorded, {"vllm/vllm-openai:v0.6.3": OTHER,
                                              "ghcr.io/sillytavern/sillytavern:1.12.6": DIGEST})
    assert list(moved) == ["vllm-backup"] and "image moved" in moved["vllm-backup"]
    assert moved_images(services, recorded, {}) == {}       # the registry did not answer: no verdict
    assert moved_images(services, {}, {"vllm/vllm-openai:v0.6.3": OTHER}) == {}   # nothing recorded yet
