"""The lab's model hub: the hub stand-in (standins/hub.py) on the bridge, with synthetic repositories.

`lab up` makes one repository for every model the fleet inventory's vLLM instances serve (the
catalogue's config.json figures when roles/vllm/models.yml knows the model), `$SWARM_LAB_MODEL_MB`
MB each (default 4) in safetensors shards, published at the catalogue's pinned revision or at
a commit derived from its content, and serves them on 198.18.0.1:5080 (content store :5081):
reachable from the controller and the nodes, nothing outside the lab. The lab inventory
points `models.hub` there and pins every vLLM instance to its repository's commit.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from orchestrator.lab import models as synthetic
from orchestrator.lab import proc
from orchestrator.lab.layout import BRIDGE_ADDRESS, LabPaths
from orchestrator.render.weights import catalogue_revisions, is_repo_id

HUB_PORT = 5080
CDN_PORT = 5081
HUB_URL = f"http://{BRIDGE_ADDRESS}:{HUB_PORT}"
MODEL_MB_ENV = "SWARM_LAB_MODEL_MB"
STANDIN = Path(__file__).parent / "standins" / "hub.py"
CATALOGUE = Path(__file__).resolve().parents[2] / "roles" / "vllm" / "models.yml"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Settings only a vLLM instance has: a service with these and a hub repository as `model` is one.
VLLM_KEYS = frozenset({"gpu_memory_utilization", "max_model_len", "kv_cache_dtype", "max_num_seqs"})


def root(paths: LabPaths) -> Path:
    return paths.root / "hub"


def start(paths: LabPaths) -> int:
    pid = proc.spawn([sys.executable, str(STANDIN), "--root", str(root(paths)), "--host", BRIDGE_ADDRESS,
                      "--port", str(HUB_PORT), "--cdn-port", str(CDN_PORT)],
                     paths.logs / "hub.log", paths.root / "hub.pid")
    proc.wait_until(ping, 20.0, f"hub stand-in on {HUB_URL}")
    return pid


def stop(paths: LabPaths) -> None:
    proc.stop_pidfile(paths.root / "hub.pid", "python")


def ping() -> bool:
    try:
        with _OPENER.open(f"{HUB_URL}/_standin/stats", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def stats() -> dict[str, Any]:
    """Requests and bytes the hub served (tests: "0 bytes from the hub")."""
    with _OPENER.open(f"{HUB_URL}/_standin/stats", timeout=5) as reply:
        return dict(json.loads(reply.read()))


def served_models(source: dict[str, Any] | None) -> list[str]:
    """Hub repositories the fleet inventory's vLLM instances serve, in order."""
    found: list[str] = []
    for body in ((source or {}).get("nodes") or {}).values():
        for settings in ((body or {}).get("services") or {}).values():
            model = str((settings or {}).get("model") or "")
            if is_repo_id(model) and VLLM_KEYS & set(settings or {}) and model not in found:
                found.append(model)
    return found


def make_repos(paths: LabPaths, repos: list[str], megabytes: float | None = None) -> dict[str, str]:
    """Each repository, synthetic, at its pinned revision; repo -> commit."""
    size = int((megabytes if megabytes is not None else float(os.environ.get(MODEL_MB_ENV) or 4)) * 1e6)
    figures = _figures()
    pinned = catalogue_revisions(CATALOGUE)
    return {repo: synthetic.make_repo(root(paths), synthetic.RepoSpec(
        repo, revision=pinned.get(repo), total_bytes=size, shards=2 if size >= 2e6 else 1,
        figures=figures.get(repo))) for repo in repos}


def _figures() -> dict[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(CATALOGUE.read_text()) or {}
    except OSError:
        return {}
    return {str(k): v for k, v in (data.get("models") or {}).items() if isinstance(v, dict)}


def pin_services(data: dict[str, Any], commits: dict[str, str]) -> None:
    """Pin every vLLM instance of the lab inventory to its synthetic repository's commit."""
    for body in (data.get("nodes") or {}).values():
        for settings in ((body or {}).get("services") or {}).values():
            model = str((settings or {}).get("model") or "")
            if model in commits and VLLM_KEYS & set(settings) and not settings.get("revision"):
                settings["revision"] = commits[model]
