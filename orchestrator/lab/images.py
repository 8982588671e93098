"""The lab image catalog and its builder: layer sets -> cached blobs -> OCI images.

Every image the roles use (docs/contracts.md) is built from local files — nothing is
pulled from outside — and pushed to the lab registry under its mirror path with an OCI
index listing the platforms the real image offers. Layers are cached under
`<lab>/cache` keyed by their content, so a second `lab up` only checks the registry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.clients import images as image_refs
from orchestrator.lab import oci, pypi, rootfs
from orchestrator.lab.layout import REGISTRY
from orchestrator.lab.oci import Blob, Entry, Layer, RuntimeConfig

log = logging.getLogger(__name__)

BOTH = ("amd64", "arm64")
AMD64 = ("amd64",)
ENV_BASE = (f"PATH={rootfs.IMAGE_PATH}",)
ENV_PY = (*ENV_BASE, "SWARM_STANDIN_SELF=1", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1")
# The real LiteLLM, offline: the bundled model cost map instead of fetching it at start.
ENV_LITELLM = (*ENV_BASE, "PYTHONUNBUFFERED=1", "LITELLM_LOCAL_MODEL_COST_MAP=True")
REAL = {"org.swarm.lab": "debian-binary"}
REAL_PYPI = {"org.swarm.lab": "pypi-package"}


@dataclass(frozen=True)
class ImageSpec:
    """One lab image: reference, platforms, layer sets and runtime config."""

    ref: str
    platforms: tuple[str, ...]
    layers: tuple[str, ...]
    runtime: RuntimeConfig
    needs_standin: str | None = None
    extra: tuple[Entry, ...] = field(default=(), compare=False)

    @property
    def repo_path(self) -> str:
        """`postgres:15-alpine` -> `library/postgres:15-alpine` (the mirror path)."""
        return image_refs.mirrored(self.ref, REGISTRY).split("/", 1)[1]

    @property
    def repository(self) -> str:
        return self.repo_path.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.repo_path.rsplit(":", 1)[1]


def _python_image(ref: str, platforms: tuple[str, ...], entrypoint: tuple[str, ...],
                  cmd: tuple[str, ...] = (), env: tuple[str, ...] = (),
                  extra: tuple[Entry, ...] = (), ports: tuple[str, ...] = (),
                  workdir: str = "/", needs: str | None = None) -> ImageSpec:
    runtime = RuntimeConfig(entrypoint, cmd, (*ENV_PY, *env), workdir, ports,
                            {"org.swarm.lab": "stand-in"})
    return ImageSpec(ref, platforms, ("base", "python", "standins"), runtime, needs, extra)


def _generic(ref: str, platforms: tuple[str, ...], name: str, port: int,
             health: str = "/health", version: str = "0.0.0") -> ImageSpec:
    env = (f"SWARM_STANDIN_NAME={name}", f"SWARM_STANDIN_PORT={port}",
           f"SWARM_STANDIN_HEALTH_PATHS={health}", f"SWARM_STANDIN_VERSION={version}")
    extra = (rootfs.python_wrapper("generic-standin", "generic.py"),)
    return _python_image(ref, platforms, ("swarm-entrypoint", "generic-standin"), (), env,
                         extra, (f"{port}/tcp",))


CUDA_12_4 = ("CUDA_VERSION=12.4.1", "NVIDIA_REQUIRE_CUDA=cuda>=12.4 brand=tesla,driver>=470,driver<471")
CUDA_12_1 = ("CUDA_VERSION=12.1.0", "NVIDIA_REQUIRE_CUDA=cuda>=12.1 brand=tesla,driver>=470,driver<471")


def _vllm(ref: str, env: tuple[str, ...] = ()) -> ImageSpec:
    return _python_image(ref, AMD64, ("python3", "-m", "vllm.entrypoints.openai.api_server"),
                         env=env, extra=tuple(rootfs.vllm_entries()), ports=("8000/tcp",))


def catalog() -> list[ImageSpec]:
    """Every lab image, as the contract table lists them."""
    return [
        ImageSpec("postgres:15-alpine", BOTH, ("base", "postgres"),
                  RuntimeConfig(("docker-entrypoint.sh",), ("postgres",),
                                (*ENV_BASE, "PGDATA=/var/lib/postgresql/data", "LANG=C.UTF-8"),
                                "/", ("5432/tcp",), REAL)),
        ImageSpec("redis:7-alpine", BOTH, ("base", "redis"),
                  RuntimeConfig(("docker-entrypoint.sh",), ("redis-server",), ENV_BASE, "/data",
                                ("6379/tcp",), REAL),
                  extra=(oci.script_entry("/usr/local/bin/docker-entrypoint.sh",
                                          rootfs.REDIS_ENTRYPOINT),)),
        ImageSpec("haproxy:2.8-alpine", BOTH, ("base", "haproxy"),
                  RuntimeConfig(("docker-entrypoint.sh",),
                                ("haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"),
                                ENV_BASE, "/", (), REAL),
                  extra=(oci.script_entry("/usr/local/bin/docker-entrypoint.sh",
                                          rootfs.HAPROXY_ENTRYPOINT),)),
        _python_image("hashicorp/consul:1.17", BOTH, ("docker-entrypoint.sh",),
                      ("agent", "-dev", "-client", "0.0.0.0"), (),
                      (rootfs.python_wrapper("consul", "consul.py"),
                       rootfs.entrypoint_script("consul")), ("8500/tcp",), needs="consul"),
        _python_image("hashicorp/vault:1.15", BOTH, ("docker-entrypoint.sh",), ("server", "-dev"),
                      (), (rootfs.python_wrapper("vault", "vault.py"),
                           rootfs.entrypoint_script("vault")), ("8200/tcp",), needs="vault"),
        ImageSpec("ghcr.io/berriai/litellm:main-v1.55.8", BOTH, ("base", "python", "litellm"),
                  RuntimeConfig(("swarm-entrypoint", "litellm"), ("--port", "4000"),
                                ENV_LITELLM, "/app", ("4000/tcp",), REAL_PYPI),
                  extra=(oci.dir_entry("/app"),)),
        _generic("ghcr.io/open-webui/open-webui:v0.3.35", BOTH, "open-webui", 8080,
                 "/health,/api/health", "0.3.35"),
        _generic("grafana/grafana:10.4.2", BOTH, "grafana", 3000, "/api/health", "10.4.2"),
        ImageSpec("prom/prometheus:v2.51.2", BOTH, ("base", "prometheus"),
                  RuntimeConfig(("swarm-faults", "/bin/prometheus"),
                                ("--config.file=/etc/prometheus/prometheus.yml",
                                 "--storage.tsdb.path=/prometheus"),
                                ENV_BASE, "/prometheus", ("9090/tcp",), REAL),
                  extra=(oci.file_entry("/etc/prometheus/prometheus.yml",
                                        rootfs.PROMETHEUS_DEFAULT_CONFIG),)),
        # the CUDA env of the real images (FROM nvidia/cuda:<CUDA_VERSION>-devel): 0.6.3 is built on
        # CUDA 12.4.1, 0.4.0 on 12.1.0 — what preflight checks against the node's driver
        _vllm("vllm/vllm-openai:v0.6.3", CUDA_12_4),
        # the same stand-in under vLLM's next tag: a new image to roll out (bench/rollout.py)
        _vllm("vllm/vllm-openai:v0.6.3.post1", CUDA_12_4),
        _vllm("vllm/vllm-openai:v0.6.3-broken", ("SWARM_STANDIN_MODE=never-healthy", *CUDA_12_4)),
        _vllm("vllm/vllm-openai:v0.4.0", CUDA_12_1),
        _python_image("qdrant/qdrant:v1.9.2", BOTH, ("swarm-entrypoint", "qdrant"), (), (),
                      (rootfs.python_wrapper("qdrant", "qdrant.py"),),
                      ("6333/tcp", "6334/tcp"), "/qdrant"),
        _python_image("utkuozdemir/nvidia_gpu_exporter:1.2.0", AMD64,
                      ("swarm-entrypoint", "nvidia_gpu_exporter"), (), (),
                      (rootfs.python_wrapper("nvidia_gpu_exporter", "gpu_exporter.py"),),
                      ("9835/tcp",)),
        _generic("ghcr.io/sillytavern/sillytavern:1.12.6", BOTH, "sillytavern", 8000),
        _generic("ghcr.io/sillytavern/sillytavern-extras:latest", AMD64, "sillytavern-extras",
                 5100),
        _generic("gptresearcher/gpt-researcher:0.9.1", BOTH, "gpt-researcher", 8000),
        _generic("ghcr.io/ai-swarm/doc-processor:1.0", BOTH, "doc-processor", 8080),
        _generic("ghcr.io/ai-swarm/rag-pipeline:1.0", BOTH, "rag-pipeline", 8080),
        _generic("metabase/metabase:v0.50.4", AMD64, "metabase", 3000, "/api/health",
                 "0.50.4"),
        # Ollama (litellm-tailscale-ollama.md): its HTTP API and CLI, no model (standins/ollama.py).
        _python_image("ollama/ollama:0.5.7", BOTH, ("/bin/ollama",), ("serve",),
                      ("OLLAMA_HOST=0.0.0.0:11434", "OLLAMA_MODELS=/root/.ollama/models"),
                      (rootfs.python_wrapper("ollama", "ollama.py"),
                       oci.symlink_entry("/bin/ollama", "/usr/local/bin/ollama")),
                      ("11434/tcp",)),
        # The SaaS API of litellm-saas-stack.md (the operator's own app): real PostgreSQL rows
        # through Debian's psql, so the image carries the postgres layer too.
        ImageSpec("ghcr.io/ai-swarm/saas-api:1.0", BOTH, ("base", "python", "standins", "postgres"),
                  RuntimeConfig(("swarm-entrypoint", "saas-api"), (), (*ENV_PY, "PORT=8000"), "/",
                                ("8000/tcp",), {"org.swarm.lab": "stand-in"}),
                  extra=(rootfs.python_wrapper("saas-api", "saas_api.py"),)),
    ]


LAYER_SETS: dict[str, Callable[[], list[Entry]]] = {
    "base": rootfs.base_entries,
    "python": rootfs.python_entries,
    "standins": rootfs.standin_entries,
    "redis": rootfs.redis_entries,
    "haproxy": rootfs.haproxy_entries,
    "postgres": rootfs.postgres_entries,
    "prometheus": rootfs.prometheus_entries,
}
# Layer sets installed from PyPI (pypi.py): keyed by what is installed, not by the files.
PYPI_SETS: dict[str, pypi.Distribution] = {"litellm": pypi.LITELLM}


class LayerCache:
    """Compressed layer blobs under `<cache>/blobs`, indexed by content key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.index = root / "layers"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.index.mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.replace(":", "-")

    def layer(self, entries: list[Entry]) -> Layer:
        key = oci.layer_key(entries)
        meta = self.index / f"{key}.json"
        cached = self._load(meta)
        if cached is not None:
            return cached
        layer, data = oci.compress_layer(oci.layer_tar(entries))
        self.put(layer.blob.digest, data)
        meta.write_text(json.dumps({"digest": layer.blob.digest, "size": layer.blob.size,
                                    "diff_id": layer.diff_id}))
        return layer

    def keyed_layer(self, key: str, entries: Callable[[], list[Entry]]) -> Layer:
        """A layer cached under a key the caller derives (entries are listed only on a miss)."""
        meta = self.index / f"named-{key}.json"
        cached = self._load(meta)
        if cached is not None:
            return cached
        layer, data = oci.compress_layer(oci.layer_tar(entries()))
        self.put(layer.blob.digest, data)
        meta.write_text(json.dumps({"digest": layer.blob.digest, "size": layer.blob.size,
                                    "diff_id": layer.diff_id}))
        return layer

    def put(self, digest: str, data: bytes) -> None:
        path = self.blob_path(digest)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)

    def _load(self, meta: Path) -> Layer | None:
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if not self.blob_path(info["digest"]).exists():
            return None
        return Layer(Blob(info["digest"], info["size"], oci.MEDIA_LAYER), info["diff_id"])


@dataclass(frozen=True)
class BuiltImage:
    """An image ready to push: its layers, and per platform a config and a manifest."""

    spec: ImageSpec
    layers: tuple[Layer, ...]
    configs: dict[str, bytes]
    manifests: dict[str, bytes]
    index: bytes


class Builder:
    """Builds catalog images, reusing layer sets across images and runs."""

    def __init__(self, cache: LayerCache, say: Callable[[str], None] = log.info) -> None:
        self.cache = cache
        self.say = say
        self._sets: dict[str, Layer] = {}

    def layer_set(self, name: str) -> Layer:
        if name not in self._sets:
            self._sets[name] = self._build_set(name)
        return self._sets[name]

    def _build_set(self, name: str) -> Layer:
        dist = PYPI_SETS.get(name)
        if dist is None:
            return self.cache.layer(LAYER_SETS[name]())
        site = pypi.ensure_installed(dist, self.cache.root, self.say)
        key = f"{site.name}-{pypi.LAYOUT}"
        return self.cache.keyed_layer(key, lambda: pypi.layer_entries(dist, site))

    def build(self, spec: ImageSpec) -> BuiltImage:
        layers = [self.layer_set(name) for name in spec.layers]
        if spec.extra:
            layers.append(self.cache.layer(list(spec.extra)))
        configs, manifests, index_entries = {}, {}, []
        for arch in spec.platforms:
            config = oci.image_config(arch, spec.runtime, layers)
            blob = Blob(oci.sha256_digest(config), len(config), oci.MEDIA_CONFIG)
            manifest = oci.manifest(blob, layers)
            configs[arch], manifests[arch] = config, manifest
            index_entries.append((arch, Blob(oci.sha256_digest(manifest), len(manifest),
                                             oci.MEDIA_MANIFEST)))
        return BuiltImage(spec, tuple(layers), configs, manifests, oci.index(index_entries))


def buildable(specs: list[ImageSpec]) -> tuple[list[ImageSpec], list[ImageSpec]]:
    """Split specs into those whose stand-in exists and those to skip for now."""
    ready = [s for s in specs if s.needs_standin is None or rootfs.has_standin(s.needs_standin)]
    skipped = [s for s in specs if s not in ready]
    return ready, skipped
