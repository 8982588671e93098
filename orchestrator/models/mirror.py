"""The controller's mirror of model revisions (`models.mirror`, default ~/.cache/swarm/models).

Laid out as a node's store is (`<repo>/<revision>/` + `.swarm-weights.json`), so an operator
can fill it by hand for a fleet without internet (copy a revision's files in, or let
`swarm models stage` fetch it once). A revision fetched from the hub lands here first: the
hub's sha256 for every LFS file is checked, the git files (config, tokenizer) are hashed as they
arrive, and only a complete, checked revision is renamed into place.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from orchestrator.clients.hub import HubClient, sha256_of
from orchestrator.commands.models import MANIFEST, TMP_SUFFIX
from orchestrator.errors import RuntimeFailure, ServiceError, SwarmError
from orchestrator.models.snapshot import Snapshot, WeightFile, is_safe_name, loads, wanted
from orchestrator.render.weights import WeightsPin

Say = Callable[[str], None]


class Mirror:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, pin: WeightsPin) -> Path:
        return self.root / pin.repo / pin.revision

    def snapshot(self, pin: WeightsPin) -> Snapshot | None:
        """The revision's manifest when the mirror holds it (None otherwise, or if unreadable)."""
        manifest = self.path(pin) / MANIFEST
        try:
            snap = loads(manifest.read_bytes())
        except (OSError, SwarmError):
            return None
        return snap if snap.pin == pin else None

    def fetch(self, client: HubClient, pin: WeightsPin, say: Say) -> Snapshot:
        """Download the revision from the hub into the mirror, checked (blocking: run in a thread)."""
        hub = client.snapshot(pin.repo, pin.revision)
        if hub.commit != pin.revision:
            raise ServiceError(f"hub {client.endpoint}: {pin.key} resolves to commit {hub.commit}",
                               hint="pin the commit itself, not a branch or tag")
        files = wanted(hub.files)
        bad = [f.name for f in files if not is_safe_name(f.name)]
        if bad:
            raise ServiceError(f"hub {client.endpoint}: {pin.key} holds a file name swarm will not write: {bad[0]!r}")
        tmp = self.path(pin).with_name(pin.revision + TMP_SUFFIX)
        tmp.mkdir(parents=True, exist_ok=True)
        out: list[WeightFile] = []
        for i, f in enumerate(files, 1):
            say(f"{pin.short}: {f.name} ({i}/{len(files)}, {f.size / 1e6:.1f} MB) from {client.endpoint}")
            path = client.download(pin.repo, pin.revision, f.name, tmp)
            digest = sha256_of(path)
            if f.sha256 is not None and digest != f.sha256:
                raise RuntimeFailure(f"{pin.key}: {f.name} from {client.endpoint} has sha256 {digest}, "
                                     f"the hub's metadata says {f.sha256}", hint="run it again (a broken download)")
            out.append(WeightFile(f.name, path.stat().st_size, digest))
        snap = Snapshot(pin, tuple(out))
        shutil.rmtree(tmp / ".cache", ignore_errors=True)   # huggingface_hub's download bookkeeping
        (tmp / MANIFEST).write_bytes(snap.dumps())
        shutil.rmtree(self.path(pin), ignore_errors=True)
        tmp.rename(self.path(pin))
        return snap

    def problems(self, snap: Snapshot) -> list[str]:
        """Files of a mirrored revision that are missing or no longer match (checked before a push)."""
        base = self.path(snap.pin)
        out = []
        for f in snap.files:
            path = base / f.name
            if not path.is_file():
                out.append(f"{f.name}: missing")
            elif sha256_of(path) != f.sha256:
                out.append(f"{f.name}: sha256 differs from its pin")
        return out
