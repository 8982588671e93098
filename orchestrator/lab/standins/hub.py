"""Hugging Face hub stand-in: the resolve/download/metadata subset `huggingface_hub` uses.

It serves model repositories from a directory (`<root>/<org>/<name>/<commit>/...`, each commit
with a `.meta.json` the lab's generator writes: orchestrator/lab/models.py), as the hub does
for the calls swarm makes through the real client (huggingface_hub/hf_api.py and
file_download.py are the reference):

- `GET /api/models/<repo>[/revision/<rev>][?blobs=true]`: the model's info — `id`, `sha` (the
  commit a branch resolves to), `siblings` with `size`, `blobId` and, for LFS files (weights),
  `lfs: {sha256, size, pointerSize}` (what `model_info(..., files_metadata=True)` reads).
- `GET /api/models/<repo>/tree/<rev>[?recursive=true]`: the file list `snapshot_download` reads
  (`type`, `path`, `size`, `oid`, `lfs`).
- `HEAD|GET /<repo>/resolve/<rev>/<path>`: a small (git) file answers 200 with `ETag` (its git
  blob id), `X-Repo-Commit` and the body; an LFS file answers `302` to the stand-in's content
  store on another port — another origin, as the hub's CDN is, so the client stops there and
  reads the metadata off the redirect: `X-Linked-Etag` (the sha256), `X-Linked-Size`,
  `X-Repo-Commit` (`get_hf_file_metadata`).
- `GET /lfs/<sha256>` on the content store; `Range: bytes=N-[M]` answers 206 (resumed downloads).
- Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) so the
  client raises its own exceptions. A repository marked private needs `Authorization: Bearer
  <token>` (the stand-in's `--token`); without it the hub answers 401 `RepoNotFound`.
- `GET /_standin/stats`: requests and bytes served (tests assert "0 bytes from the hub").

Not modelled: uploads, xet storage, datasets/spaces, gated-access requests, commit history,
`?expand=`, pagination. Stdlib only; runs on the lab bridge address only (lab/hub.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

try:
    from . import _base
except ImportError:  # run as a script
    import _base  # type: ignore[no-redef]

META = ".meta.json"
REFS = "refs"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 20


class Store:
    """The repositories on disk, and what was served (thread-safe counters)."""

    def __init__(self, root: Path, token: str | None = None) -> None:
        self.root = root
        self.token = token
        self.cdn = ""  # the content store's origin, set once it listens
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes_served = 0
        self.downloads: dict[str, int] = {}

    def count(self, key: str, sent: int) -> None:
        with self.lock:
            self.bytes_served += sent
            self.downloads[key] = self.downloads.get(key, 0) + sent

    def repo_dir(self, repo: str) -> Path | None:
        path = self.root / repo
        if ".." in repo.split("/") or not (path / REFS).is_dir():
            return None
        return path

    def commit_of(self, repo_dir: Path, revision: str) -> str | None:
        """A branch name (refs/<name>) or a commit the repository has."""
        ref = repo_dir / REFS / revision
        if "/" not in revision and ref.is_file():
            return ref.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{40}", revision) and (repo_dir / revision / META).is_file():
            return revision
        return None

    def meta(self, repo_dir: Path, commit: str) -> dict[str, Any]:
        return dict(json.loads((repo_dir / commit / META).read_text()))

    def is_private(self, repo_dir: Path) -> bool:
        return (repo_dir / "private").exists()

    def blob_path(self, sha256: str) -> Path | None:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            return None
        for meta_file in self.root.glob(f"*/*/*/{META}"):
            for entry in json.loads(meta_file.read_text())["files"]:
                if entry.get("sha256") == sha256 and entry.get("lfs"):
                    return meta_file.parent / str(entry["name"])
        return None


class HubHandler(_base.Handler):
    name = "hub"
    store: Store

    def route(self, method: str, path: str) -> None:
        with self.store.lock:
            self.store.requests += 1
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["_standin", "stats"]:
            self._stats()
        elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree" and method == "GET":
            self._tree("/".join(parts[2:4]), parts[5])
        elif parts[:2] == ["api", "models"] and len(parts) >= 4 and method == "GET":
            self._model_info(parts[2:])
        elif len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        elif len(parts) == 2 and parts[0] == "lfs" and method in ("GET", "HEAD"):
            self._lfs(parts[1])
        else:
            self._error(404, "EntryNotFound", f"no route for {method} {path}")

    # --- the API --------------------------------------------------------------------

    def _stats(self) -> None:
        with self.store.lock:
            self.send_json(200, {"requests": self.store.requests, "bytes_served": self.store.bytes_served,
                                 "downloads": dict(self.store.downloads)})

    def _model_info(self, rest: list[str]) -> None:
        repo = "/".join(rest[:2])
        revision = rest[3] if len(rest) >= 4 and rest[2] == "revision" else "main"
        found = self._find(repo, revision)
        if found is None:
            return
        repo_dir, commit = found
        meta = self.store.meta(repo_dir, commit)
        blobs = parse_qs(urlsplit(self.path).query).get("blobs", ["false"])[0].lower() == "true"
        self.send_json(200, {
            "_id": commit[:24], "id": repo, "modelId": repo, "sha": commit, "private": self.store.is_private(repo_dir),
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": ["safetensors"],
            "library_name": "transformers", "lastModified": meta.get("created", "2026-01-01T00:00:00.000Z"),
            "createdAt": meta.get("created", "2026-01-01T00:00:00.000Z"),
            "config": meta.get("config_summary", {}),
            "siblings": [_sibling(e, blobs) for e in meta["files"]],
        })

    def _tree(self, repo: str, revision: str) -> None:
        found = self._find(repo, revision)
        if found is None:
            return
        repo_dir, commit = found
        self.send_json(200, [_tree_entry(e) for e in self.store.meta(repo_dir, commit)["files"]])

    def _resolve(self, repo: str, revision: str, name: str) -> None:
        found = self._find(repo, revision)
        if found is None:
            return
        repo_dir, commit = found
        entry = next((e for e in self.store.meta(repo_dir, commit)["files"] if e["name"] == name), None)
        if entry is None:
            self._error(404, "EntryNotFound", f"{name} is not in {repo}@{commit}")
            return
        common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if entry.get("lfs"):
            common.update({"Location": f"{self.store.cdn}/lfs/{entry['sha256']}", "X-Linked-Size": str(entry["size"]),
                           "X-Linked-Etag": f'"{entry["sha256"]}"', "ETag": f'"{entry["blob_id"]}"'})
            self._head_only(302, common)
            return
        common["ETag"] = f'"{entry["blob_id"]}"'
        self._send_file(repo_dir / commit / name, f"{repo}/{name}", common)

    def _lfs(self, sha256: str) -> None:
        path = self.store.blob_path(sha256)
        if path is None:
            self._error(404, "EntryNotFound", f"no blob {sha256}")
            return
        self._send_file(path, sha256, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    # --- plumbing -----------------------------------------------------------------------

    def _find(self, repo: str, revision: str) -> tuple[Path, str] | None:
        repo_dir = self.store.repo_dir(repo)
        if repo_dir is None or (self.store.is_private(repo_dir) and not self._authorized()):
            self._error(401 if repo_dir is not None else 404, "RepoNotFound",
                        "Repository Not Found for url: " + self.path)
            return None
        commit = self.store.commit_of(repo_dir, revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo_dir, commit

    def _authorized(self) -> bool:
        return bool(self.store.token) and self.bearer_ok(self.store.token)

    def _error(self, status: int, code: str, message: str) -> None:
        self.read_body()
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _head_only(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_file(self, path: Path, key: str, headers: dict[str, str]) -> None:
        size = path.stat().st_size
        start, end = _byte_range(self.headers.get("Range"), size)
        status = 206 if (start, end) != (0, size - 1) and self.headers.get("Range") else 200
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        self.end_headers()
        if self.command == "HEAD":
            return
        self.store.count(key, _copy(path, start, end, self.wfile))


def _copy(path: Path, start: int, end: int, out: Any) -> int:
    sent = 0
    with path.open("rb") as handle:
        handle.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = handle.read(min(_CHUNK, left))
            if not chunk:
                break
            out.write(chunk)
            sent += len(chunk)
            left -= len(chunk)
    return sent


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """`bytes=N-`, `bytes=N-M`, `bytes=-K` -> (first, last) inside the file; the whole file otherwise."""
    match = _RANGE.match((header or "").strip())
    if not match or size == 0:
        return 0, size - 1
    first, last = match.groups()
    if not first:
        return max(0, size - int(last or 0)), size - 1
    return min(int(first), size), min(int(last), size - 1) if last else size - 1


def _tree_entry(entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "file", "path": entry["name"], "size": entry["size"], "oid": entry["blob_id"]}
    if entry.get("lfs"):
        out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": 134}
    return out


def _sibling(entry: dict[str, Any], blobs: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"rfilename": entry["name"]}
    if blobs:
        out.update(size=entry["size"], blobId=entry["blob_id"])
        if entry.get("lfs"):
            out["lfs"] = {"sha256": entry["sha256"], "size": entry["size"], "pointerSize": 134}
    return out


class HubServer:
    """A running stand-in: the API (`url`) and its content store on another port; `shutdown()`."""

    def __init__(self, server: ThreadingHTTPServer, cdn: ThreadingHTTPServer, store: Store) -> None:
        self.server = server
        self.cdn = cdn
        self.store = store
        store.cdn = f"http://{_host(cdn)}:{cdn.server_address[1]}"
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (server, cdn)]
        for thread in self.threads:
            thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{_host(self.server)}:{self.port}"

    def shutdown(self) -> None:
        for server in (self.server, self.cdn):
            server.shutdown()
            server.server_close()


def _host(server: ThreadingHTTPServer) -> str:
    host = server.server_address[0]
    return host.decode() if isinstance(host, bytes) else str(host)


def serve(host: str, port: int, root: Path, token: str | None = None, cdn_port: int = 0) -> HubServer:
    """The API on host:port, the content store on host:cdn_port (0: any free port)."""
    store = Store(root, token)
    handler = type("BoundHubHandler", (HubHandler,), {"store": store})
    servers = [_base.Server((host, p), handler) for p in (port, cdn_port)]
    for server in servers:
        server.daemon_threads = True
    return HubServer(servers[0], servers[1], store)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5080)
    parser.add_argument("--cdn-port", type=int, default=5081)
    parser.add_argument("--token", default=os.environ.get("SWARM_HUB_TOKEN"))
    args = parser.parse_args(argv)
    _base.exit_on_sigterm()
    hub = serve(args.host, args.port, args.root, args.token, args.cdn_port)
    _base.log("hub", f"listening on {hub.url}, repositories under {args.root}")
    try:
        hub.threads[0].join()
    finally:
        hub.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
