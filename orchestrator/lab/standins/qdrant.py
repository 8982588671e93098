"""Qdrant stand-in: health probes, collections with points, and collection snapshots.

Port from env `QDRANT__SERVICE__HTTP_PORT` (default 6333), storage from
`QDRANT__STORAGE__STORAGE_PATH` (default /qdrant/storage), snapshots from
`QDRANT__STORAGE__SNAPSHOTS_PATH` (default /qdrant/snapshots, as the real server's
`./snapshots` under /qdrant), optional API key from `QDRANT__SERVICE__API_KEY` (header
`api-key`). Collections live in `<storage>/collections.json`, so they survive a container
recreate when the volume does — which is what "qdrant is protected: never recreate" guards.

What it serves follows Qdrant's HTTP API (https://api.qdrant.tech/api-reference), each
answer as `{"result": ..., "status": "ok", "time": ...}`:

- collections: list, create (PUT), info, delete;
- points (https://api.qdrant.tech/api-reference/points): upsert (`PUT .../points`, a
  `points` list of `{id, vector, payload}`), retrieve (`POST .../points` with `ids`, and
  `GET .../points/{id}`), scroll (`POST .../points/scroll`: every point, by id), count;
- collection snapshots (https://qdrant.tech/documentation/concepts/snapshots/ and
  https://api.qdrant.tech/api-reference/snapshots): create (`POST .../snapshots`, a tar
  archive written to `<snapshots>/<collection>/<collection>-<n>-<time>.snapshot`, described
  as `{name, creation_time, size, checksum}` with the sha256), list, download, delete,
  recover from a location (`PUT .../snapshots/recover` with `{"location": "file:///..."}` or
  an http(s) URL, and an optional `checksum`), and recover from an upload
  (`POST .../snapshots/upload`, multipart field `snapshot`). A recover overwrites the
  collection's data, and creates the collection when it does not exist, as the docs say.

Not modelled: vector search, filters, payload indexes, shards, full-storage snapshots,
gRPC. A snapshot here holds the stand-in's own JSON, not Qdrant's segment files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]

VERSION = "1.9.2"
_SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,250}\.snapshot")
_SNAPSHOT_MEMBER = "collection.json"


class QdrantError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(name: str) -> QdrantError:
    return QdrantError(404, f"Not found: Collection `{name}` doesn't exist!")


class Store:
    """Collections (config + points) kept as one JSON file under the storage directory,
    snapshots as files under the snapshots directory."""

    def __init__(self, root: Path, snapshots: Path | None = None) -> None:
        self.path = root / "collections.json"
        self.snapshots = snapshots or root / "snapshots"
        self.lock = threading.RLock()
        root.mkdir(parents=True, exist_ok=True)
        self.snapshots.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def put(self, name: str, config: dict[str, Any]) -> bool:
        with self.lock:
            data = self.load()
            if name in data:
                return False
            data[name] = {"config": config, "created": time.time(), "points": {}}
            self.save(data)
            return True

    def delete(self, name: str) -> bool:
        with self.lock:
            data = self.load()
            existed = data.pop(name, None) is not None
            self.save(data)
            return existed

    def collection(self, name: str) -> dict[str, Any]:
        entry = self.load().get(name)
        if entry is None:
            raise not_found(name)
        entry.setdefault("points", {})
        return dict(entry)

    # --- points

    def upsert(self, name: str, points: list[dict[str, Any]]) -> None:
        with self.lock:
            data = self.load()
            if name not in data:
                raise not_found(name)
            stored = data[name].setdefault("points", {})
            for point in points:
                if not isinstance(point, dict) or "id" not in point:
                    raise QdrantError(400, "Format error in JSON body: every point needs an id")
                stored[str(point["id"])] = {"id": point["id"], "vector": point.get("vector"),
                                            "payload": point.get("payload") or {}}
            self.save(data)

    def points(self, name: str) -> list[dict[str, Any]]:
        stored = self.collection(name)["points"]
        return [stored[k] for k in sorted(stored, key=_id_order)]

    # --- snapshots

    def snapshot_dir(self, name: str) -> Path:
        return self.snapshots / name

    def create_snapshot(self, name: str) -> dict[str, Any]:
        with self.lock:
            entry = self.collection(name)
            body = json.dumps({"name": name, "config": entry["config"], "points": entry["points"]},
                              sort_keys=True).encode()
            stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime())
            directory = self.snapshot_dir(name)
            directory.mkdir(parents=True, exist_ok=True)
            count = len(list(directory.glob("*.snapshot")))
            path = directory / f"{name}-{count + 1}-{stamp}.snapshot"
            while path.exists():
                count += 1
                path = directory / f"{name}-{count + 1}-{stamp}.snapshot"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(_tar_of(body))
            tmp.replace(path)
            return describe_snapshot(path)

    def list_snapshots(self, name: str) -> list[dict[str, Any]]:
        self.collection(name)
        directory = self.snapshot_dir(name)
        files = sorted(directory.glob("*.snapshot")) if directory.is_dir() else []
        return [describe_snapshot(p) for p in files]

    def snapshot_path(self, name: str, snapshot: str) -> Path:
        if not _SNAPSHOT_NAME.fullmatch(snapshot):
            raise QdrantError(400, f"Bad snapshot name `{snapshot}`")
        path = self.snapshot_dir(name) / snapshot
        if not path.is_file():
            raise QdrantError(404, f"Not found: Snapshot {snapshot} not found")
        return path

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self.snapshot_path(name, snapshot).unlink()

    def recover(self, name: str, archive: bytes, checksum: str | None = None) -> None:
        if checksum and hashlib.sha256(archive).hexdigest() != checksum.lower():
            raise QdrantError(400, "Bad request: Snapshot checksum mismatch")
        content = _read_snapshot(archive)
        with self.lock:
            data = self.load()
            data[name] = {"config": content.get("config", {}), "created": time.time(),
                          "points": dict(content.get("points", {}))}
            self.save(data)

    def local_snapshot(self, location: str) -> bytes:
        """The bytes of a `file://` location, which must lie in the snapshots directory."""
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(location).path)).resolve()
        if not path.is_relative_to(self.snapshots.resolve()) or not path.is_file():
            raise QdrantError(400, f"Bad request: Snapshot file {path} does not exist in the snapshots "
                                   "directory")
        return path.read_bytes()


def _id_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)


def _tar_of(body: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(_SNAPSHOT_MEMBER)
        info.size, info.mtime = len(body), int(time.time())
        tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def _read_snapshot(archive: bytes) -> dict[str, Any]:
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            member = tar.extractfile(_SNAPSHOT_MEMBER)
            data = json.loads(member.read()) if member is not None else None
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise QdrantError(400, f"Bad request: not a snapshot archive ({exc})") from None
    if not isinstance(data, dict):
        raise QdrantError(400, "Bad request: not a snapshot archive")
    return data


def describe_snapshot(path: Path) -> dict[str, Any]:
    body = path.read_bytes()
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(path.stat().st_mtime))
    return {"name": path.name, "creation_time": created, "size": len(body),
            "checksum": hashlib.sha256(body).hexdigest()}


def ok(result: Any) -> dict[str, Any]:
    return {"result": result, "status": "ok", "time": 0.0001}


def make_handler(store: Store, api_key: str | None) -> type[_base.Handler]:
    class QdrantHandler(_base.Handler):
        name = "qdrant-standin"

        def route(self, method: str, path: str) -> None:
            if path in ("/healthz", "/livez", "/readyz"):
                return self.probe(path)
            if api_key and self.headers.get("api-key") != api_key:
                return self.send_json(403, {"status": {"error": "Invalid api-key"}})
            try:
                self.dispatch(method, path)
            except QdrantError as exc:
                self.send_json(exc.status, {"status": {"error": exc.message}, "time": 0.0})

        def dispatch(self, method: str, path: str) -> None:
            if path == "/":
                return self.send_json(
                    200, {"title": "qdrant - vector search engine", "version": VERSION}
                )
            if path == "/collections" and method == "GET":
                names = [{"name": n} for n in sorted(store.load())]
                return self.send_json(200, ok({"collections": names}))
            parts = [urllib.parse.unquote(p) for p in path.split("/")[2:]]
            if path.startswith("/collections/") and parts:
                return self.collection(method, parts[0], parts[1:])
            self.send_json(404, {"status": {"error": "Not found"}})

        def probe(self, path: str) -> None:
            if not self.mode.is_healthy:
                return self.send_text(503, "service unavailable")
            texts = {
                "/healthz": "healthz check passed",
                "/livez": "healthz check passed",
                "/readyz": "all shards are ready",
            }
            self.send_text(200, texts[path])

        def collection(self, method: str, name: str, rest: list[str]) -> None:
            if rest[:1] == ["points"]:
                return self.points(method, name, rest[1:])
            if rest[:1] == ["snapshots"]:
                return self.snapshots(method, name, rest[1:])
            if rest:
                raise QdrantError(404, "Not found")
            if method == "PUT":
                return self.send_json(200, ok(store.put(name, self.read_json())))
            if method == "DELETE":
                return self.send_json(200, ok(store.delete(name)))
            entry = store.collection(name)
            count = len(entry["points"])
            info = {"status": "green", "points_count": count, "vectors_count": count,
                    "config": entry["config"]}
            self.send_json(200, ok(info))

        def points(self, method: str, name: str, rest: list[str]) -> None:
            if not rest and method == "PUT":
                store.upsert(name, list(self.read_json().get("points") or []))
                return self.send_json(200, ok({"operation_id": 0, "status": "completed"}))
            if not rest and method == "POST":
                wanted = {str(i) for i in self.read_json().get("ids") or []}
                return self.send_json(200, ok([p for p in store.points(name) if str(p["id"]) in wanted]))
            if rest == ["scroll"] and method == "POST":
                return self.send_json(200, ok({"points": store.points(name), "next_page_offset": None}))
            if rest == ["count"] and method == "POST":
                return self.send_json(200, ok({"count": len(store.points(name))}))
            if len(rest) == 1 and method == "GET":
                found = [p for p in store.points(name) if str(p["id"]) == rest[0]]
                if not found:
                    raise QdrantError(404, f"Not found: No point with id {rest[0]} found")
                return self.send_json(200, ok(found[0]))
            raise QdrantError(404, "Not found")

        def snapshots(self, method: str, name: str, rest: list[str]) -> None:
            if not rest and method == "POST":
                return self.send_json(200, ok(store.create_snapshot(name)))
            if not rest and method == "GET":
                return self.send_json(200, ok(store.list_snapshots(name)))
            if rest == ["recover"] and method == "PUT":
                body = self.read_json()
                location = str(body.get("location") or "")
                store.recover(name, self.fetch(location), body.get("checksum"))
                return self.send_json(200, ok(True))
            if rest == ["upload"] and method == "POST":
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                checksum = query.get("checksum", [""])[0] or None
                store.recover(name, self.uploaded(), checksum)
                return self.send_json(200, ok(True))
            if len(rest) == 1 and method == "GET":
                data = store.snapshot_path(name, rest[0]).read_bytes()
                return self.send_bytes(200, data, "application/octet-stream")
            if len(rest) == 1 and method == "DELETE":
                store.delete_snapshot(name, rest[0])
                return self.send_json(200, ok(True))
            raise QdrantError(404, "Not found")

        def fetch(self, location: str) -> bytes:
            scheme = urllib.parse.urlsplit(location).scheme
            if scheme == "file":
                return store.local_snapshot(location)
            if scheme in ("http", "https"):
                with urllib.request.urlopen(location, timeout=60) as answer:  # noqa: S310 (the docs' URL form)
                    return bytes(answer.read())
            raise QdrantError(400, f"Bad request: unsupported snapshot location `{location}`")

        def uploaded(self) -> bytes:
            head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
            message = BytesParser(policy=HTTP).parsebytes(head + self.read_body())
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "snapshot":
                    return bytes(part.get_payload(decode=True) or b"")
            raise QdrantError(400, "Bad request: no `snapshot` file in the upload")

    return QdrantHandler


def main(argv: list[str] | None = None) -> int:
    port = int(os.environ.get("QDRANT__SERVICE__HTTP_PORT", "6333"))
    storage = Path(os.environ.get("QDRANT__STORAGE__STORAGE_PATH", "/qdrant/storage"))
    snapshots = Path(os.environ.get("QDRANT__STORAGE__SNAPSHOTS_PATH", "/qdrant/snapshots"))
    api_key = os.environ.get("QDRANT__SERVICE__API_KEY") or None
    host = os.environ.get("QDRANT__SERVICE__HOST", "0.0.0.0")
    _base.serve(make_handler(Store(storage, snapshots), api_key), host, port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
