"""What a node's model store holds, read in one command, and what its files hash to.

`read_store` lists every revision directory under `<deploy_root>/models/` with the manifest
swarm wrote when it installed it (`.swarm-weights.json`), the transfers left half way (`.tmp`
directories) and the free space of the store's filesystem. `check_files` hashes the files of
one revision on the node and names every file that is missing or differs from its pin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.commands import models as mcmd
from orchestrator.errors import SwarmError
from orchestrator.models.snapshot import Snapshot, loads
from orchestrator.render.weights import STORE, WeightsPin
from orchestrator.transport.base import Transport


@dataclass(frozen=True)
class Held:
    """One revision directory on a node; `snapshot` None: no manifest (not installed by swarm)."""

    pin: WeightsPin
    path: str
    snapshot: Snapshot | None


@dataclass(frozen=True)
class NodeStore:
    node: str
    deploy_root: str
    held: dict[WeightsPin, Held] = field(default_factory=dict)
    partial: tuple[str, ...] = ()
    free_bytes: int | None = None

    def has(self, pin: WeightsPin) -> bool:
        held = self.held.get(pin)
        return held is not None and held.snapshot is not None

    @property
    def held_bytes(self) -> int:
        return sum(h.snapshot.total_bytes for h in self.held.values() if h.snapshot)


def pin_of_path(deploy_root: str, path: str) -> WeightsPin | None:
    prefix = f"{deploy_root.rstrip('/')}/{STORE}/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix):].split("/")
    return WeightsPin(f"{parts[0]}/{parts[1]}", parts[2]) if len(parts) == 3 else None


def parse_store(node: str, deploy_root: str, stdout: str) -> NodeStore:
    """`list_store`'s answer: `R dir` / `M manifest` / `T dir` / `F free KiB` lines."""
    held: dict[WeightsPin, Held] = {}
    partial: list[str] = []
    free: int | None = None
    last: Held | None = None
    for line in stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "R" and (pin := pin_of_path(deploy_root, rest)) is not None:
            last = held[pin] = Held(pin, rest, None)
        elif kind == "M" and last is not None:
            held[last.pin] = Held(last.pin, last.path, _manifest(rest, last.pin))
        elif kind == "T":
            partial.append(rest)
        elif kind == "F" and rest.strip().isdigit():
            free = int(rest.strip()) * 1024
    return NodeStore(node, deploy_root, held, tuple(partial), free)


def _manifest(text: str, pin: WeightsPin) -> Snapshot | None:
    try:
        snap = loads(text)
    except SwarmError:
        return None
    return snap if snap.pin == pin else None


async def read_store(transport: Transport, deploy_root: str) -> NodeStore:
    result = await transport.run(mcmd.list_store(deploy_root), timeout=60)
    return parse_store(transport.host, deploy_root, result.stdout)


@dataclass(frozen=True)
class FileProblem:
    name: str
    problem: str   # "missing" or "sha256 <found>, pinned <expected>"

    def __str__(self) -> str:
        return f"{self.name}: {self.problem}"


def compare(snapshot: Snapshot, hashes: dict[str, str]) -> list[FileProblem]:
    """Each pinned file against what `sha256sum` printed for it."""
    out = []
    for f in snapshot.files:
        found = hashes.get(f.name)
        if found is None:
            out.append(FileProblem(f.name, "missing"))
        elif found != f.sha256:
            out.append(FileProblem(f.name, f"sha256 {found[:16]}…, pinned {f.sha256[:16]}…"))
    return out


async def check_files(transport: Transport, directory: str, snapshot: Snapshot) -> list[FileProblem]:
    """Hash the revision's files on the node (about a second per GB) and name every bad one."""
    timeout = 120 + snapshot.total_bytes / 50e6   # at least 50 MB/s of disk and sha256
    result = await transport.run(mcmd.hash_files(directory, snapshot.names), check=False, timeout=timeout)
    return compare(snapshot, mcmd.parse_hashes(result.stdout))


def stale(stores: Sequence[NodeStore]) -> dict[str, tuple[str, ...]]:
    return {s.node: s.partial for s in stores if s.partial}
