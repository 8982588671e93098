"""The lab registry: Debian `docker-registry` on the bridge, and a small push client.

The registry listens on 198.18.0.1:5000 only and keeps its storage under the lab
directory across `down`/`up`, so pushing an unchanged image is a few HEAD requests.
The client talks HTTP API v2 with urllib and no proxy (a proxy would send lab traffic
outside 198.18.0.0/15).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

from orchestrator.errors import ServiceError
from orchestrator.lab import oci, proc
from orchestrator.lab.images import BuiltImage, LayerCache
from orchestrator.lab.layout import REGISTRY, LabPaths

log = logging.getLogger(__name__)

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ACCEPT = ", ".join([oci.MEDIA_INDEX, oci.MEDIA_MANIFEST,
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])


def render_config(storage: Path) -> str:
    """docker-registry config.yml (YAML is a superset of JSON)."""
    return json.dumps({
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": REGISTRY},
    }, indent=2)


def start(paths: LabPaths) -> int:
    """Start docker-registry in the background; returns its pid once it answers."""
    paths.registry_root.mkdir(parents=True, exist_ok=True)
    config = paths.root / "registry.yml"
    config.write_text(render_config(paths.registry_root))
    pid = proc.spawn(["docker-registry", "serve", str(config)], paths.logs / "registry.log",
                     paths.root / "registry.pid")
    proc.wait_until(lambda: ping(), 20.0, "lab registry on " + REGISTRY)
    return pid


def stop(paths: LabPaths) -> None:
    proc.stop_pidfile(paths.root / "registry.pid", "docker-registry")


def ping() -> bool:
    try:
        with _OPENER.open(f"http://{REGISTRY}/v2/", timeout=2) as reply:
            return bool(reply.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _request(method: str, path: str, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    url = path if path.startswith("http") else f"http://{REGISTRY}{path}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=60) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (OSError, urllib.error.URLError) as exc:
        raise ServiceError(f"lab registry {REGISTRY}: {method} {path}: {exc}") from exc


def get_manifest(repository: str, reference: str) -> tuple[int, str, bytes]:
    """GET a manifest or index with the OCI/Docker Accept list: (status, type, body)."""
    status, headers, body = _request("GET", f"/v2/{repository}/manifests/{reference}",
                                     headers={"Accept": ACCEPT})
    return status, headers.get("Content-Type", ""), body


class Pusher:
    """Pushes built images, mounting blobs already in another repository."""

    def __init__(self, cache: LayerCache) -> None:
        self.cache = cache
        self.known: dict[str, str] = {}  # digest -> a repository holding it

    def push(self, image: BuiltImage) -> bool:
        """Push one image; False when the registry already had the same index."""
        repo, tag = image.spec.repository, image.spec.tag
        digest = oci.sha256_digest(image.index)
        if self._has_manifest(repo, tag, digest):
            self._remember(image, repo)
            return False
        for layer in image.layers:
            self._ensure_blob(repo, layer.blob.digest, None)
        for arch, manifest in image.manifests.items():
            self._ensure_blob(repo, oci.sha256_digest(image.configs[arch]), image.configs[arch])
            self._put_manifest(repo, oci.sha256_digest(manifest), manifest, oci.MEDIA_MANIFEST)
        self._put_manifest(repo, tag, image.index, oci.MEDIA_INDEX)
        return True

    def _remember(self, image: BuiltImage, repo: str) -> None:
        for layer in image.layers:
            self.known.setdefault(layer.blob.digest, repo)

    def _has_manifest(self, repo: str, tag: str, digest: str) -> bool:
        status, headers, _ = _request("HEAD", f"/v2/{repo}/manifests/{tag}",
                                      headers={"Accept": oci.MEDIA_INDEX})
        return status == 200 and headers.get("Docker-Content-Digest") == digest

    def _ensure_blob(self, repo: str, digest: str, data: bytes | None) -> None:
        status, _, _ = _request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            self.known.setdefault(digest, repo)
            return
        source = self.known.get(digest)
        query = f"?mount={digest}&from={source}" if source else ""
        status, headers, _ = _request("POST", f"/v2/{repo}/blobs/uploads/{query}")
        if status == 201:
            return
        if status != 202:
            raise ServiceError(f"lab registry: cannot start upload to {repo} (HTTP {status})")
        body = data if data is not None else self.cache.blob_path(digest).read_bytes()
        location = headers["Location"]
        sep = "&" if "?" in location else "?"
        status, _, reply = _request("PUT", f"{location}{sep}digest={digest}", body,
                                    {"Content-Type": "application/octet-stream"})
        if status != 201:
            raise ServiceError(f"lab registry: upload of {digest} to {repo} failed "
                               f"(HTTP {status}): {reply[:200]!r}")
        self.known[digest] = repo

    def _put_manifest(self, repo: str, reference: str, body: bytes, media: str) -> None:
        status, _, reply = _request("PUT", f"/v2/{repo}/manifests/{reference}", body,
                                    {"Content-Type": media})
        if status != 201:
            raise ServiceError(f"lab registry: manifest {repo}:{reference} rejected "
                               f"(HTTP {status}): {reply[:300]!r}")


def wait_gone(timeout: float = 5.0) -> None:
    """Bounded wait for the registry port to close after stop()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ping():
        time.sleep(0.1)


def is_running() -> bool:
    return ping()

