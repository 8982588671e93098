"""Find a model's own config.json when the catalog does not know it.

vLLM reads the architecture from the checkpoint's config.json; so can the plan, from

  * a local path: `model: /srv/models/coder-7b` (a directory holding config.json, or the file),
    relative paths taken from the project root;
  * a Hugging Face cache laid out as the hub client writes it,
    `<cache>/models--<org>--<name>/snapshots/<revision>/config.json`, preferring the revision
    `refs/main` names. The caches searched: the service's `hf_cache` var (one path or a list,
    e.g. a copy of the node's /root/.cache/huggingface/hub), then $HF_HUB_CACHE, $HF_HOME/hub
    and ~/.cache/huggingface/hub on the machine running swarm.

Nothing here downloads: a model found nowhere gets no estimate, and the plan says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import PlanError
from orchestrator.render.model_arch import ModelArch, arch_from_config


def cache_roots(service_vars: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if environ is None else environ
    roots = [Path(str(p)).expanduser() for p in _as_list(service_vars.get("hf_cache"))]
    if env.get("HF_HUB_CACHE"):
        roots.append(Path(env["HF_HUB_CACHE"]).expanduser())
    if env.get("HF_HOME"):
        roots.append(Path(env["HF_HOME"]).expanduser() / "hub")
    roots.append(Path(env.get("HOME", "~")).expanduser() / ".cache" / "huggingface" / "hub")
    return roots


def _as_list(value: Any) -> list[Any]:
    if value in (None, ""):
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def find_config(model: str, project_root: Path, roots: Sequence[Path]) -> Path | None:
    local = _local_config(model, project_root)
    if local is not None:
        return local
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        return None
    repo_dir = "models--" + model.replace("/", "--")
    for root in roots:
        found = _snapshot_config(root / repo_dir)
        if found is not None:
            return found
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


def load_arch(path: Path) -> ModelArch:
    """The architecture in one config.json; a broken file is bad input naming that file."""
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise ValueError("expected a JSON object")
        return arch_from_config(config, source=str(path))
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot size the model from its config.json: {exc}", file=str(path)) from None
