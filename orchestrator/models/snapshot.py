"""A revision's files, each with its size and sha256: what is staged, checked and recorded.

A `Snapshot` is the manifest of one `repo@revision`: the files a model server needs (weights
in safetensors when the repository has them — a repository often carries the same weights
again as `.bin`, `.pth`, `original/` or GGUF, which are left out), each with its size and
sha256. It comes from the hub's own metadata (LFS files) and from hashing what was downloaded
(git files); the node keeps it beside the files (`.swarm-weights.json`), the controller's
mirror too, and a release records it, so every later check compares against the same pins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.clients.hub import HubFile
from orchestrator.errors import RuntimeFailure
from orchestrator.render.weights import WeightsPin

# Other serialisations of the same weights, left out when safetensors are there.
_DUPLICATES = (".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx", ".ot", ".ckpt")
_NEVER = (".gitattributes", ".png", ".jpg", ".jpeg", ".gif")


@dataclass(frozen=True)
class WeightFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Snapshot:
    pin: WeightsPin
    files: tuple[WeightFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def to_json(self) -> dict[str, Any]:
        return {"repo": self.pin.repo, "revision": self.pin.revision, "bytes": self.total_bytes,
                "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files]}

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n").encode()


def from_json(data: Mapping[str, Any]) -> Snapshot:
    """A manifest read back (from a node, the mirror or a release); RuntimeFailure if malformed."""
    try:
        pin = WeightsPin(str(data["repo"]), str(data["revision"]))
        files = tuple(WeightFile(str(f["name"]), int(f["size"]), str(f["sha256"])) for f in data["files"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RuntimeFailure(f"a weights manifest is malformed ({type(exc).__name__}: {exc})") from None
    return Snapshot(pin, files)


def loads(text: str | bytes) -> Snapshot:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RuntimeFailure(f"a weights manifest is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RuntimeFailure("a weights manifest is not a JSON object")
    return from_json(data)


def wanted(files: Iterable[HubFile]) -> list[HubFile]:
    """The files a server needs: no duplicate serialisations when safetensors exist, no pictures."""
    listed = [f for f in files if not f.name.endswith(_NEVER) and "/." not in f"/{f.name}"]
    if any(f.name.endswith(".safetensors") for f in listed):
        listed = [f for f in listed if not f.name.endswith(_DUPLICATES) and not f.name.startswith("original/")]
    return sorted(listed, key=lambda f: f.name)


def human(size: float) -> str:
    """Bytes as people read them: `812 MB`, `7.42 GB`."""
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def is_safe_name(name: str) -> bool:
    """A relative path inside the revision (no absolute path, no `..`, no control characters)."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and ".." not in parts and "" not in parts and \
        not any(ord(c) < 32 for c in name)
