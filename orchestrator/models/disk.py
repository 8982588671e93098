"""Weight bytes per node against its free disk, for `swarm plan` — which touches no node.

Offline, the figures come from what swarm saw last, kept on the controller
(`<state dir>/models-<fleet>.json`, written by every staging: `swarm models stage | ls`, and each
deploy): each node's free bytes in its model store and the revisions it held at that reading, and
the size of every revision swarm has a manifest for (also the controller's mirror). A node never
read falls back to the inventory's `disk_gb` (its capacity: nothing else counted on it), and a
revision of unknown size to the GPU plan's weight estimate from its config.json figures (marked
"estimated"). The verdict: the weights placed on a node that it does not hold yet, plus the
inventory's `models.disk_margin_gb`, must fit in that free space — else `swarm plan` exits 2
naming the node and the models. Preflight and staging then check the real free space.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.config.project import Project
from orchestrator.models.mirror import Mirror
from orchestrator.paths import local_state_dir
from orchestrator.render.services import Service
from orchestrator.render.weights import WeightsPin

if TYPE_CHECKING:  # the store's reader needs the transport (asyncssh): `swarm plan` never loads it
    from orchestrator.models.store import NodeStore

GB = 1e9
GIB = 1 << 30


def record_path(project: Project) -> Path:
    return local_state_dir() / f"models-{project.inventory.fleet}.json"


def load_record(project: Project) -> dict[str, Any]:
    try:
        data = json.loads(record_path(project).read_text())
    except (OSError, ValueError):
        return {"nodes": {}, "sizes": {}}
    return data if isinstance(data, dict) else {"nodes": {}, "sizes": {}}


def remember(project: Project, stores: Mapping[str, NodeStore], sizes: Mapping[WeightsPin, int], by: str) -> None:
    """Keep what staging read (best effort: the plan works without it)."""
    data = load_record(project)
    data.setdefault("nodes", {})
    data.setdefault("sizes", {})
    for name, store in stores.items():
        data["nodes"][name] = {"free_bytes": store.free_bytes, "at": time.time(), "by": by,
                               "held": {h.pin.key: h.snapshot.total_bytes for h in store.held.values() if h.snapshot}}
    data["sizes"].update({pin.key: size for pin, size in sizes.items()})
    path = record_path(project)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        return


@dataclass
class NodeDisk:
    node: str
    weights: dict[WeightsPin, tuple[int, str]] = field(default_factory=dict)   # pin -> (bytes, how known)
    held: set[WeightsPin] = field(default_factory=set)
    free_bytes: float | None = None
    source: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(b for b, _ in self.weights.values())

    @property
    def to_copy_bytes(self) -> int:
        return sum(b for p, (b, _) in self.weights.items() if p not in self.held)

    def describe(self, margin_gb: float) -> str:
        estimated = any(how == "estimated" for _, how in self.weights.values())
        head = (f"  weights: {self.total_bytes / GB:.2f} GB in {len(self.weights)} revision(s)"
                f"{' (estimated)' if estimated else ''}, {self.to_copy_bytes / GB:.2f} GB to stage")
        if self.free_bytes is None:
            return head + "; free disk unknown (no reading yet, no disk_gb in the inventory)"
        left = self.free_bytes - self.to_copy_bytes
        return head + f"; {left / GB:.1f} GB free after them (margin {margin_gb:g} GB; {self.source})"

    def problem(self, margin_gb: float) -> str | None:
        if self.free_bytes is None or self.to_copy_bytes + margin_gb * GB <= self.free_bytes:
            return None
        models = ", ".join(f"{p.short} {b / GB:.2f} GB" for p, (b, _) in sorted(self.weights.items())
                           if p not in self.held)
        return (f"{self.node}: the weights placed here do not fit its disk: {models} need "
                f"{self.to_copy_bytes / GB:.2f} GB + the {margin_gb:g} GB margin, {self.free_bytes / GB:.2f} GB "
                f"is free ({self.source}): free space (`swarm models gc`), or place a model elsewhere")


def node_disks(project: Project, services: Sequence[Service], estimates: Mapping[str, float]) -> list[NodeDisk]:
    """Per node that serves a pinned model: its weights, what it already holds, its free disk.

    `estimates`: service -> the GPU plan's weights (GiB), for revisions of unknown size."""
    record = load_record(project)
    mirror = Mirror(Path(project.inventory.spec.models.mirror).expanduser())
    out: dict[str, NodeDisk] = {}
    for svc in services:
        pin = svc.weights
        if pin is None or not pin.pinned:
            continue
        disk = out.get(svc.node) or _node_disk(project, svc.node, record)
        out[svc.node] = disk
        disk.weights[pin] = _size(pin, record, mirror, estimates.get(svc.name))
    return list(out.values())


def _node_disk(project: Project, name: str, record: Mapping[str, Any]) -> NodeDisk:
    seen = (record.get("nodes") or {}).get(name) or {}
    disk = NodeDisk(name)
    if seen.get("free_bytes") is not None:
        disk.free_bytes = float(seen["free_bytes"])
        disk.held = {WeightsPin(*k.split("@", 1)) for k in seen.get("held") or {}}
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(seen.get("at") or 0)))
        disk.source = f"read by {seen.get('by') or 'swarm'} at {when}"
    elif project.inventory.node(name).spec.disk_gb is not None:
        disk.free_bytes = float(project.inventory.node(name).spec.disk_gb or 0) * GB
        disk.source = "the inventory's disk_gb: no reading yet"
    return disk


def _size(pin: WeightsPin, record: Mapping[str, Any], mirror: Mirror, estimate_gib: float | None) -> tuple[int, str]:
    known = (record.get("sizes") or {}).get(pin.key)
    if known is not None:
        return int(known), "recorded"
    snap = mirror.snapshot(pin)
    if snap is not None:
        return snap.total_bytes, "mirror"
    return int((estimate_gib or 0.0) * GIB), "estimated"


def plan_disks(project: Project, services: Sequence[Service], plan_nodes: Sequence[Any]) -> list[NodeDisk]:
    """`node_disks` with the GPU plan's weight estimates (render/plan.py's NodePlan cards)."""
    estimates = {e.service: e.startup.weights_gib for n in plan_nodes for c in n.cards for e in c.instances}
    return node_disks(project, services, estimates)


def as_dict(disk: NodeDisk, margin_gb: float) -> dict[str, Any]:
    return {"weights_bytes": disk.total_bytes, "to_stage_bytes": disk.to_copy_bytes, "free_bytes": disk.free_bytes,
            "free_source": disk.source, "margin_gb": margin_gb, "fits": disk.problem(margin_gb) is None,
            "revisions": {p.key: {"bytes": b, "size_from": how, "held": p in disk.held}
                          for p, (b, how) in sorted(disk.weights.items())}}
