"""What each node's model store holds, who uses it, and what may go.

A revision is *referenced* on a node while any release the node keeps (every directory under
`releases/`, the current one, the previous ones a rollback returns to, one being written)
names it in its compose.yml — the read-only mount of `<deploy_root>/models/<repo>/<revision>`.
The compose file is the one thing every release has, deploy or rollback, so the rule holds for
releases swarm did not record weights for. `gc` removes only revisions that no kept release
references and that the project does not place on the node now (staged ahead of a deploy),
plus transfers left half way; a rollback therefore always finds its weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.commands import models as mcmd
from orchestrator.models.store import Held, NodeStore, pin_of_path
from orchestrator.render.weights import STORE, WeightsPin
from orchestrator.transport.base import Transport


@dataclass(frozen=True)
class NodeModels:
    """One node's store with, per revision, the releases that reference it."""

    store: NodeStore
    used_by: dict[WeightsPin, tuple[str, ...]]

    def removable(self, wanted: Iterable[WeightsPin]) -> list[Held]:
        keep = set(wanted)
        return [h for pin, h in sorted(self.store.held.items()) if pin not in self.used_by and pin not in keep]


def parse_references(deploy_root: str, stdout: str) -> dict[WeightsPin, tuple[str, ...]]:
    """`<release> <compose line>` lines -> revision -> the releases naming it."""
    pattern = re.compile(re.escape(f"{deploy_root.rstrip('/')}/{STORE}/") + r"[^/\s:]+/[^/\s:]+/[^/\s:]+")
    found: dict[WeightsPin, set[str]] = {}
    for line in stdout.splitlines():
        release, _, text = line.partition(" ")
        for match in pattern.finditer(text):
            pin = pin_of_path(deploy_root, match.group(0))
            if pin is not None:
                found.setdefault(pin, set()).add(release.removeprefix(".tmp-"))
    return {pin: tuple(sorted(r)) for pin, r in found.items()}


async def read_references(transport: Transport, deploy_root: str) -> dict[WeightsPin, tuple[str, ...]]:
    result = await transport.run(mcmd.references(deploy_root), timeout=60)
    return parse_references(deploy_root, result.stdout)


def removal_paths(models: NodeModels, wanted: Iterable[WeightsPin]) -> list[str]:
    """What `gc` removes on the node: unreferenced, unwanted revisions and half-done transfers."""
    return [h.path for h in models.removable(wanted)] + list(models.store.partial)
