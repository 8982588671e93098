"""A rollback with the upstream registry stopped (issue 22): the release a rollback goes back to names
each image by the digest it recorded, and the node still holds those images, so `swarm rollback`
needs no registry; an image the node lost stops the rollback before any change, naming it.

The lab's registry (Debian `docker-registry` on 198.18.0.1:5000, orchestrator/lab/registry.py) is
every image's upstream here. Each test changes vllm-secondary's image on starlord (phase 3) with the
registry up, stops the registry, rolls back, and starts the registry again in a `finally`; the
fleet is deployed back as the lab inventory has it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.lab import registry as lab_registry
from tests.integration.labtools import container_ids, node_sh, ok, quick_inventory, swarm

pytestmark = pytest.mark.lab

NODE, SERVICE = "starlord", "vllm-secondary"
CONTAINER = f"swarm-{NODE}-{SERVICE}-1"


def running_image(lab) -> str:  # noqa: ANN001 - the lab
    return node_sh(lab, NODE, "docker", "inspect", "-f", "{{.Config.Image}}", CONTAINER).strip()


def current_release(lab) -> dict:  # type: ignore[type-arg]  # noqa: ANN001
    return dict(json.loads(node_sh(lab, NODE, "cat", "/opt/ai-swarm/current/release.json")))


def other_tag(image: str) -> str:
    """A vLLM tag with another digest than `image` (v0.4.0 is built on another CUDA: lab/images.py)."""
    return "v0.6.3" if ":v0.4.0@" in image or image.endswith(":v0.4.0") else "v0.4.0"


def deploy_other_image(lab, tmp_path: Path) -> str:  # noqa: ANN001
    """Phase 3 with vllm-secondary on another image (registry up); the image it runs now."""
    before = running_image(lab)
    tag = other_tag(before)
    inventory = quick_inventory(lab, tmp_path, lambda d: d["nodes"][NODE]["services"][SERVICE]
                                .update({"image_tag": tag}), name="changed.yml")
    ok(swarm(lab, "deploy", "--phase", "3", inventory=inventory))
    now = running_image(lab)
    assert f":{tag}@sha256:" in now, now   # the release pins the digest preflight verified
    return now


def registry_stopped(lab) -> None:  # noqa: ANN001
    lab_registry.stop(lab.paths)
    lab_registry.wait_gone()
    assert not lab_registry.ping(), "the lab registry still answers"


def test_a_rollback_with_the_registry_stopped_runs_the_previous_releases_images(deployed, tmp_path: Path) -> None:
    """With the registry stopped: back to the previous release (its images are on the node), then
    a rollback `--to` the changed release after the node lost its image stops before any change,
    naming the image (one change deployed, one test: the lab suite's time is shared)."""
    lab = deployed
    before_image, before = running_image(lab), current_release(lab)
    changed = deploy_other_image(lab, tmp_path)
    assert changed != before_image
    changed_release = current_release(lab)["id"]
    registry_stopped(lab)
    try:
        result = swarm(lab, "rollback", "--phase", "3", inventory=quick_inventory(lab, tmp_path))
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert running_image(lab) == before_image   # the previous release's image, by its digest
        back = current_release(lab)
        assert back["rolled_back_to"] == before.get("rolled_back_to", before["id"])   # what ran before
        assert back["images"][SERVICE] == before["images"][SERVICE]
        # the node loses the changed release's image, every name of it; going back to it now stops
        image_id = node_sh(lab, NODE, "docker", "image", "inspect", "-f", "{{.Id}}", changed).strip()
        node_sh(lab, NODE, "docker", "rmi", "-f", image_id)
        current, containers = back["id"], container_ids(lab, NODE)
        refused = swarm(lab, "rollback", "--phase", "3", "--to", changed_release)
        assert refused.returncode == 1, f"exit {refused.returncode}\n{refused.stdout}\n{refused.stderr}"
        assert changed in refused.stderr and SERVICE in refused.stderr, refused.stderr
        assert "start the registry" in refused.stderr and "nothing was changed" in refused.stderr
        assert current_release(lab)["id"] == current and container_ids(lab, NODE) == containers
    finally:
        lab_registry.start(lab.paths)
    ok(swarm(lab, "deploy", "--phase", "3", inventory=quick_inventory(lab, tmp_path)))   # as the lab inventory has it
    assert running_image(lab) == before_image
