"""Qdrant stand-in: health probes and collections persisted under the storage volume.

Port from env `QDRANT__SERVICE__HTTP_PORT` (default 6333), storage from
`QDRANT__STORAGE__STORAGE_PATH` (default /qdrant/storage), optional API key from
`QDRANT__SERVICE__API_KEY` (header `api-key`). Collections live in
`<storage>/collections.json`, so they survive a container recreate when the volume does —
which is what "qdrant is protected: never recreate" guards in the real world.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]

VERSION = "1.9.2"


class Store:
    """Collections kept as one JSON file under the storage directory."""

    def __init__(self, root: Path) -> None:
        self.path = root / "collections.json"
        self.lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

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
            data[name] = {"config": config, "created": time.time()}
            self.save(data)
            return True

    def delete(self, name: str) -> bool:
        with self.lock:
            data = self.load()
            existed = data.pop(name, None) is not None
            self.save(data)
            return existed


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
            if path == "/":
                return self.send_json(
                    200, {"title": "qdrant - vector search engine", "version": VERSION}
                )
            if path == "/collections" and method == "GET":
                names = [{"name": n} for n in sorted(store.load())]
                return self.send_json(200, ok({"collections": names}))
            if path.startswith("/collections/"):
                return self.collection(method, path.split("/")[2])
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

        def collection(self, method: str, name: str) -> None:
            if method == "PUT":
                return self.send_json(200, ok(store.put(name, self.read_json())))
            if method == "DELETE":
                return self.send_json(200, ok(store.delete(name)))
            entry = store.load().get(name)
            if entry is None:
                err = {"error": f"Not found: Collection `{name}` doesn't exist!"}
                return self.send_json(404, {"status": err, "time": 0.0})
            info = {"status": "green", "points_count": 0, "config": entry["config"]}
            self.send_json(200, ok(info))

    return QdrantHandler


def main(argv: list[str] | None = None) -> int:
    port = int(os.environ.get("QDRANT__SERVICE__HTTP_PORT", "6333"))
    storage = Path(os.environ.get("QDRANT__STORAGE__STORAGE_PATH", "/qdrant/storage"))
    api_key = os.environ.get("QDRANT__SERVICE__API_KEY") or None
    host = os.environ.get("QDRANT__SERVICE__HOST", "0.0.0.0")
    _base.serve(make_handler(Store(storage), api_key), host, port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
