"""Qdrant's collection snapshot API, as a backup and a restore use it (from the controller).

Per the Qdrant docs (https://qdrant.tech/documentation/concepts/snapshots/, API reference
https://api.qdrant.tech/api-reference/snapshots): `GET /collections` lists the collections;
`POST /collections/{c}/snapshots?wait=true` writes a snapshot (a tar archive of the
collection's data and configuration) under the server's snapshots directory and describes
it (`name`, `size`, `checksum` = sha256); `DELETE /collections/{c}/snapshots/{name}` removes
it; `PUT /collections/{c}/snapshots/recover` with `{"location": "file:///...", "priority":
"snapshot", "checksum": ...}` overwrites the collection's data from a snapshot file the
server can read, creating the collection when it does not exist.

The snapshot files themselves move between the container and the backup directory on the
node (`docker cp`, commands/backup.py): a collection never travels through the controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator.commands.backup import SAFE_NAME
from orchestrator.errors import RuntimeFailure

SNAPSHOT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Snapshot:
    collection: str
    name: str
    size: int
    checksum: str | None


class QdrantApi:
    """Calls to one Qdrant server over an `httpx.AsyncClient` the caller owns."""

    def __init__(self, client: httpx.AsyncClient, base: str, service: str) -> None:
        self.client, self.base, self.service = client, base.rstrip("/"), service

    async def collections(self) -> list[str]:
        data = await self._call("GET", "/collections")
        names = [str(c.get("name", "")) for c in (data.get("collections") or []) if isinstance(c, dict)]
        for name in names:
            if not SAFE_NAME.fullmatch(name):
                raise RuntimeFailure(f"{self.service}: collection {name!r} has a name swarm cannot use as a "
                                     "file name (letters, digits and _.- only)")
        return sorted(names)

    async def create_snapshot(self, collection: str) -> Snapshot:
        data = await self._call("POST", f"/collections/{collection}/snapshots", params={"wait": "true"})
        name = str(data.get("name", ""))
        if not SAFE_NAME.fullmatch(name):
            raise RuntimeFailure(f"{self.service}: Qdrant named the snapshot of {collection} {name!r}")
        checksum = data.get("checksum")
        return Snapshot(collection, name, int(data.get("size") or 0), str(checksum) if checksum else None)

    async def delete_snapshot(self, collection: str, name: str) -> None:
        await self._call("DELETE", f"/collections/{collection}/snapshots/{name}", params={"wait": "true"})

    async def recover(self, collection: str, location: str, checksum: str | None) -> None:
        body: dict[str, Any] = {"location": location, "priority": "snapshot"}
        if checksum:
            body["checksum"] = checksum
        await self._call("PUT", f"/collections/{collection}/snapshots/recover", params={"wait": "true"},
                         json=body)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base}{path}"
        try:
            resp = await self.client.request(method, url, timeout=SNAPSHOT_TIMEOUT_S, **kwargs)
        except httpx.HTTPError as exc:
            raise RuntimeFailure(f"{self.service}: {method} {url}: {type(exc).__name__}: {exc}",
                                 hint="is Qdrant up and its port reachable from here?") from None
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code != 200:
            error = (data.get("status") or {}).get("error") if isinstance(data, dict) else None
            raise RuntimeFailure(f"{self.service}: {method} {path} answered {resp.status_code}: "
                                 f"{error or resp.text[:200]}")
        return data.get("result") if isinstance(data, dict) else None
