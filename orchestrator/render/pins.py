"""Images pinned per release: the compose file a release writes names each image by the digest
preflight verified, and a tag that moved since is a change.

The rendered compose (and `swarm render`'s tree) names tags, as the roles do; a release's copy
names `<image>:<tag>@<digest>` — docker runs the digest, people still read the tag. The release
records the pins (`release.json` → `images`, carried forward for services other phases deployed),
so the next run compares what a tag names now (one registry HEAD per image, while the SSH
connections open) with what the node runs, and `swarm verify` compares containers with the same
pins.

Weights on a moving revision (`main`, a branch) are pinned the same way: the rendered compose
mounts `<store>/<repo>/main`, the release's copy mounts the commit staging resolved it to, which
the release records (`release.json` → `models`, carried forward like the images), and a branch
that moved on the hub is a change (`moved_weights`). Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.render.services import Service
from orchestrator.render.weights import WeightsPin


def digest_of(pinned: str) -> str:
    """`registry/repo@sha256:...` -> `sha256:...` ("" when there is no digest)."""
    return pinned.rpartition("@")[2] if "@" in pinned else ""


def pinned_image(image: str, pinned: str) -> str:
    """`repo:tag` + the pin -> `repo:tag@sha256:...` (an image already pinned keeps its digest)."""
    return image if "@" in image or not digest_of(pinned) else f"{image}@{digest_of(pinned)}"


def pin_compose(text: bytes, images: Mapping[str, tuple[str, str]]) -> bytes:
    """A release's compose.yml with each service's `image:` (service -> (image, pin)) pinned.

    The render writes every service as `  <name>:` then `    image: <ref>` first (render/fleet.py),
    so the line is replaced where it stands and nothing else moves."""
    out = text.decode()
    for name, (image, pin) in sorted(images.items()):
        line = re.compile(rf"(?m)^(  {re.escape(name)}:\n    image: ){re.escape(image)}$")
        out = line.sub(_replacement(pinned_image(image, pin)), out, count=1)
    return out.encode()


def _replacement(pinned: str) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) + pinned


def pin_weights(text: bytes, mounts: Mapping[str, tuple[str, str]]) -> bytes:
    """A release's compose.yml with each service's weights mount (service -> (the rendered mount,
    the commit's mount)) replaced inside that service's block only."""
    out = text.decode()
    for name, (rendered, pinned) in sorted(mounts.items()):
        block = re.compile(rf"(?ms)^  {re.escape(name)}:\n.*?(?=^  \S|^\S|\Z)").search(out)
        if block is None or rendered == pinned:
            continue
        body = block.group(0).replace(f"- {rendered}\n", f"- {pinned}\n", 1)
        out = out[:block.start()] + body + out[block.end():]
    return out.encode()


def weights_mounts(services: Iterable[Service], models: Mapping[str, WeightsPin], roots: Callable[[str], str]
                   ) -> dict[str, tuple[str, str]]:
    """service -> (rendered mount, mount of the commit `models` records) for moving revisions."""
    out = {}
    for svc in services:
        pin, chosen = svc.weights, models.get(svc.name)
        if pin is not None and pin.moving and chosen is not None and chosen.repo == pin.repo:
            root = roots(svc.node)
            out[svc.name] = (pin.mount(root), chosen.mount(root))
    return out


def release_compose(text: bytes, services: Iterable[Service], images: Mapping[str, str],
                    models: Mapping[str, WeightsPin], roots: Callable[[str], str]) -> bytes:
    """The compose.yml a release writes: the render's, each image pinned by the digest and each
    moving weights revision by the commit the release records (recorded_images, recorded_models)."""
    chosen = list(services)
    pins = {s.name: (s.image, images[s.name]) for s in chosen if s.name in images}
    return pin_weights(pin_compose(text, pins), weights_mounts(chosen, models, roots))


def recorded_images(current: Mapping[str, Any] | None) -> dict[str, str]:
    """service -> the pin the node's current release records (release.json `images`)."""
    images = (current or {}).get("images")
    return {str(k): str(v) for k, v in images.items()} if isinstance(images, dict) else {}


def moved_images(services: Iterable[Service], recorded: Mapping[str, str], digests: Mapping[str, str]
                 ) -> dict[str, str]:
    """service -> why: its image's tag names another digest than the one the node runs."""
    out = {}
    for svc in services:
        was, now = digest_of(recorded.get(svc.name, "")), digests.get(svc.image, "")
        if was and now and was != now:
            out[svc.name] = f"image moved: {svc.image} is {now[:19]}…, the node runs {was[:19]}…"
    return out


def recorded_models(current: Mapping[str, Any] | None) -> dict[str, WeightsPin]:
    """service -> the weights (repo at a commit) the node's current release records (`models`)."""
    models = (current or {}).get("models")
    if not isinstance(models, dict):
        return {}
    return {str(k): WeightsPin(str(v["repo"]), str(v["revision"])) for k, v in models.items()
            if isinstance(v, dict) and v.get("repo") and v.get("revision")}


def moved_weights(services: Iterable[Service], recorded: Mapping[str, WeightsPin], resolved: Mapping[WeightsPin, str]
                  ) -> dict[str, str]:
    """service -> why: the branch its weights follow names another commit than the node serves."""
    out = {}
    for svc in services:
        pin, was = svc.weights, recorded.get(svc.name)
        if pin is None or not pin.moving or was is None or was.repo != pin.repo:
            continue
        now = resolved.get(pin, "")
        if now and now != was.revision:
            out[svc.name] = f"weights moved: {pin.key} is {now[:12]}, the node serves {was.revision[:12]}"
    return out
