"""Find a model's own config.json, and its tensors' sizes, where its weights are.

vLLM reads the architecture from the checkpoint's config.json; so does the plan, from the
first of these that holds the model (the plan says which it used):

  1. the staged weights: a local path (`model: /srv/models/coder-7b`, relative paths from the
     project root), or the controller's mirror of the per-node model store,
     `<mirror>/<org>/<name>/<revision>/` (the `model_mirror` var or $SWARM_MODEL_MIRROR; the
     revision the service's `model_revision` var pins, else the newest there);
  2. a Hugging Face cache laid out as the hub client writes it,
     `<cache>/models--<org>--<name>/snapshots/<revision>/config.json`, preferring the revision
     `refs/main` names: the service's `hf_cache` var, then $HF_HUB_CACHE, $HF_HOME/hub and
     ~/.cache/huggingface/hub on the machine running swarm;
  3. the catalogue, roles/vllm/models.yml (render/plan.py).

Beside config.json, `read_model_dir` sums the checkpoint's tensor bytes: from each
*.safetensors file's header (8 bytes of length, then JSON with every tensor's dtype and shape;
the weights themselves are never read), else from model.safetensors.index.json's
metadata.total_size. That sum is the most exact weights figure there is.

Nothing here downloads: a model found nowhere gets no estimate, and the plan says so.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import PlanError
from orchestrator.render.model_arch import ModelArch, arch_from_config

HEADER_LIMIT = 100 * 2**20    # a safetensors header larger than this is not one
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
                "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75}


@dataclass(frozen=True)
class FoundConfig:
    """A config.json found for a model, and what kind of place it came from."""

    path: Path
    where: str   # "staged weights" or "hub cache"


def cache_roots(service_vars: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if environ is None else environ
    roots = [Path(str(p)).expanduser() for p in _as_list(service_vars.get("hf_cache"))]
    if env.get("HF_HUB_CACHE"):
        roots.append(Path(env["HF_HUB_CACHE"]).expanduser())
    if env.get("HF_HOME"):
        roots.append(Path(env["HF_HOME"]).expanduser() / "hub")
    roots.append(Path(env.get("HOME", "~")).expanduser() / ".cache" / "huggingface" / "hub")
    return roots


def mirror_roots(service_vars: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if environ is None else environ
    roots = [Path(str(p)).expanduser() for p in _as_list(service_vars.get("model_mirror"))]
    if env.get("SWARM_MODEL_MIRROR"):
        roots.append(Path(env["SWARM_MODEL_MIRROR"]).expanduser())
    return roots


def _as_list(value: Any) -> list[Any]:
    if value in (None, ""):
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def find_config(model: str, project_root: Path, roots: Sequence[Path], mirrors: Sequence[Path] = (),
                revision: str | None = None) -> FoundConfig | None:
    """The model's config.json: staged weights first, then a hub cache."""
    local = _local_config(model, project_root)
    if local is not None:
        return FoundConfig(local, "staged weights")
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        return None
    for mirror in mirrors:
        staged = staged_config(mirror / model, revision)
        if staged is not None:
            return FoundConfig(staged, "staged weights")
    repo_dir = "models--" + model.replace("/", "--")
    for root in roots:
        found = _snapshot_config(root / repo_dir)
        if found is not None:
            return FoundConfig(found, "hub cache")
    return None


def staged_config(repo: Path, revision: str | None = None) -> Path | None:
    """`<repo>/<revision>/config.json` in a model store: the pinned revision, else the newest."""
    if revision:
        path = repo / revision / "config.json"
        return path if path.is_file() else None
    if not repo.is_dir():
        return None
    for rev in _newest_first(repo.iterdir()):
        if (rev / "config.json").is_file():
            return rev / "config.json"
    return None


def _local_config(model: str, project_root: Path) -> Path | None:
    path = Path(model).expanduser()
    if not path.is_absolute():
        if not model.startswith((".", "~")):
            return None
        path = project_root / path
    if path.is_dir() and (path / "config.json").is_file():
        return path / "config.json"
    return path if path.name == "config.json" and path.is_file() else None


def _snapshot_config(repo: Path) -> Path | None:
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    main = repo / "refs" / "main"
    preferred = [snapshots / main.read_text().strip()] if main.is_file() else []
    for snapshot in [*preferred, *_newest_first(snapshots.iterdir())]:
        if (snapshot / "config.json").is_file():
            return snapshot / "config.json"
    return None


def _newest_first(paths: Iterable[Path]) -> list[Path]:
    return sorted((p for p in paths if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)


# ---------------------------------------------------------------- reading a model directory


def read_model_dir(directory: Path) -> ModelArch:
    """The architecture in a model directory (config.json) with its tensors' total size where
    the directory holds safetensors headers or an index. The one entry a model store calls."""
    return load_arch(directory / "config.json")


def load_arch(path: Path) -> ModelArch:
    """The architecture in one config.json, with the tensor sizes beside it; a broken file is
    bad input naming that file."""
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise ValueError("expected a JSON object")
        arch = arch_from_config(config, source=str(path))
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot size the model from its config.json: {exc}", file=str(path)) from None
    total, source = tensor_bytes(path.parent)
    return replace(arch, tensor_bytes=total, tensor_source=source) if total else arch


def tensor_bytes(directory: Path) -> tuple[float | None, str]:
    """The checkpoint's tensor bytes: summed from the safetensors headers, else the index's
    metadata.total_size; (None, "") when neither is there."""
    shards = sorted(directory.glob("*.safetensors"))
    if shards:
        try:
            return sum(_header_bytes(s) for s in shards), f"{len(shards)} safetensors header(s)"
        except (OSError, ValueError) as exc:
            raise PlanError(f"cannot read the safetensors header: {exc}", file=str(directory)) from None
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        except (OSError, ValueError) as exc:
            raise PlanError(f"cannot read the safetensors index: {exc}", file=str(index)) from None
        if isinstance(total, int | float) and total > 0:
            return float(total), "model.safetensors.index.json total_size"
    return None, ""


def _header_bytes(path: Path) -> float:
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path.name}: shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > HEADER_LIMIT:
            raise ValueError(f"{path.name}: header of {length} bytes is not a safetensors header")
        header = json.loads(f.read(length))
    return sum(_tensor_size(name, t) for name, t in header.items() if name != "__metadata__")


def _tensor_size(name: str, tensor: Mapping[str, Any]) -> float:
    dtype = str(tensor.get("dtype"))
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"tensor {name}: unknown dtype {dtype}")
    return math.prod(int(d) for d in tensor.get("shape") or []) * _DTYPE_BYTES[dtype]
