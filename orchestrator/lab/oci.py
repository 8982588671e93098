"""OCI image pieces built in Python: layers from file lists, configs, manifests, indexes.

Lab images are written without any Docker daemon: a layer is a deterministic gzip'd tar
of `Entry`s (host files keep their mtime so packed `.pyc` files stay valid; generated
files get a fixed mtime), and blobs are content-addressed (`sha256:<hex>`). An image is
one config + manifest per platform, all platforms listed in one OCI index — the arm64
entry of the lab is the same amd64 content under an arm64 config (the lab emulates ARM).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
FIXED_MTIME = 1704067200  # 2024-01-01, for generated files
CREATED = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class Entry:
    """One path in a layer: a file (from `source` or `data`), a directory or a symlink."""

    path: str
    kind: str = "file"  # file | dir | symlink
    source: Path | None = None
    data: bytes | None = None
    target: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0

    def fingerprint(self) -> str:
        """What decides the layer bytes for this entry (for the content cache key)."""
        base = f"{self.path}|{self.kind}|{self.target}|{self.mode:o}|{self.uid}|{self.gid}"
        if self.source is not None:
            st = self.source.stat()
            return f"{base}|{self.source}|{st.st_size}|{st.st_mtime_ns}"
        if self.data is not None:
            return f"{base}|{hashlib.sha256(self.data).hexdigest()}"
        return base


def file_entry(path: str, data: bytes | str, mode: int = 0o644) -> Entry:
    raw = data.encode() if isinstance(data, str) else data
    return Entry(path, data=raw, mode=mode)


def script_entry(path: str, text: str) -> Entry:
    return file_entry(path, text, 0o755)


def host_file(path: str, source: Path | None = None, mode: int | None = None) -> Entry:
    """A host file copied into the layer (symlinks resolved) at `path`."""
    src = Path(source or path).resolve()
    return Entry(path, source=src, mode=mode if mode is not None else src.stat().st_mode & 0o7777)


def dir_entry(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, kind="dir", mode=mode, uid=uid, gid=gid)


def symlink_entry(path: str, target: str) -> Entry:
    return Entry(path, kind="symlink", target=target, mode=0o777)


def layer_key(entries: Iterable[Entry]) -> str:
    """Content key of a layer: sha256 over the entries' fingerprints."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        digest.update(entry.fingerprint().encode() + b"\n")
    return digest.hexdigest()


def _parents(path: str) -> list[str]:
    parts = PurePosixPath(path.lstrip("/")).parents
    return [str(p) for p in reversed(list(parts)) if str(p) != "."]


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path.lstrip("/"))
    info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.gid
    info.mtime = FIXED_MTIME
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
    elif entry.source is not None:
        st = entry.source.stat()
        info.size, info.mtime = st.st_size, int(st.st_mtime)
    else:
        info.size = len(entry.data or b"")
    return info


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """Uncompressed, deterministic tar of the entries (parent dirs added, sorted)."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        for parent in _parents(entry.path):
            by_path.setdefault(parent, dir_entry(parent))
        by_path[entry.path.lstrip("/")] = entry
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(by_path):
            entry = by_path[path]
            info = _tarinfo(entry)
            if entry.kind != "file":
                tar.addfile(info)
            elif entry.source is not None:
                with entry.source.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info, io.BytesIO(entry.data or b""))
    return buffer.getvalue()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob."""

    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Layer:
    """A built layer: compressed blob plus the diff_id of its uncompressed tar."""

    blob: Blob
    diff_id: str


def compress_layer(tar_bytes: bytes) -> tuple[Layer, bytes]:
    gz = gzip.compress(tar_bytes, compresslevel=3, mtime=0)
    blob = Blob(sha256_digest(gz), len(gz), MEDIA_LAYER)
    return Layer(blob, sha256_digest(tar_bytes)), gz


def canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class RuntimeConfig:
    """The `config` section of an image config: what `docker run` starts."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    workdir: str = "/"
    ports: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Env": list(self.env), "WorkingDir": self.workdir}
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.ports:
            out["ExposedPorts"] = {p: {} for p in self.ports}
        if self.labels:
            out["Labels"] = dict(self.labels)
        return out


def image_config(arch: str, runtime: RuntimeConfig, layers: list[Layer]) -> bytes:
    payload = {
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": runtime.as_json(),
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": CREATED, "created_by": "swarm lab"} for _ in layers],
    }
    if arch == "arm64":
        payload["variant"] = "v8"
    return canonical(payload)


def manifest(config: Blob, layers: list[Layer]) -> bytes:
    return canonical({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    })


def platform_of(arch: str) -> dict[str, str]:
    platform = {"architecture": arch, "os": "linux"}
    if arch == "arm64":
        platform["variant"] = "v8"
    return platform


def index(manifests: list[tuple[str, Blob]]) -> bytes:
    """An OCI index of (arch, manifest blob) pairs."""
    entries = [dict(blob.descriptor(), platform=platform_of(arch)) for arch, blob in manifests]
    return canonical({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries})
