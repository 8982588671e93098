"""Images pinned per release: the compose file a release writes names each image by the digest
preflight verified, and a tag that moved since is a change.

The rendered compose (and `swarm render`'s tree) names tags, as the roles do; a release's copy
names `<image>:<tag>@<digest>` — docker runs the digest, people still read the tag. The release
records the pins (`release.json` → `images`, carried forward for services other phases deployed),
so the next run compares what a tag names now (one registry HEAD per image, while the SSH
connections open) with what the node runs, and `swarm verify` compares containers with the same
pins. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.render.services import Service


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
