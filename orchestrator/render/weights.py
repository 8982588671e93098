"""Model weights as pinned artifacts: which repository, at which revision, a service serves.

A role that serves a model names it with a `weights:` block (roles/vllm: `repo: "{{ model }}"`,
`revision: "{{ revision }}"`). The revision is the instance's own `revision` var, else the
`revision:` the model catalogue (roles/vllm/models.yml) pins for that repository, else `main`.

A commit (40 hex digits) is a pin. Anything else (`main`, a branch, a tag) *moves*: it is
resolved to a commit when the weights are staged, as an image tag is resolved to a digest
(models/resolve.py), and the release's compose mounts that commit's directory in place of the
revision's name (render/pins.py: `pin_weights`) — the rendered tree keeps the name, as it keeps
image tags. Either way the server starts from the store, offline: it never downloads.

On its node the revision lives in the model store, `<deploy_root>/models/<repo>/<commit>/`
(docs/models.md); the container sees that one directory, read-only, at `/models/<repo>`, so a
new revision is a new compose definition (the service is recreated) and a server can only
read the weights it was pinned to. Pure: no network, no node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

STORE = "models"
CONTAINER_ROOT = "/models"
UNPINNED = "main"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, order=True)
class WeightsPin:
    """`repo@revision`: one model repository at one revision."""

    repo: str
    revision: str

    @property
    def pinned(self) -> bool:
        """A commit (40 hex digits), not a branch or a tag that can move."""
        return bool(_COMMIT.fullmatch(self.revision))

    @property
    def moving(self) -> bool:
        """A branch or a tag: staging resolves it to a commit first (models/resolve.py)."""
        return not self.pinned

    def at(self, commit: str) -> WeightsPin:
        """The same repository at `commit` (what a moving revision resolved to)."""
        return WeightsPin(self.repo, commit)

    @property
    def key(self) -> str:
        return f"{self.repo}@{self.revision}"

    @property
    def short(self) -> str:
        return f"{self.repo}@{self.revision[:12]}"

    def store_dir(self, deploy_root: str) -> str:
        """Where the node keeps this revision."""
        return f"{deploy_root}/{STORE}/{self.repo}/{self.revision}"

    @property
    def container_path(self) -> str:
        return f"{CONTAINER_ROOT}/{self.repo}"

    def mount(self, deploy_root: str) -> str:
        return f"{self.store_dir(deploy_root)}:{self.container_path}:ro"

    def as_vars(self, deploy_root: str) -> dict[str, Any]:
        """What a role's templates see as `weights`. A moving revision mounts the directory named
        after it here; the release's compose names the commit it resolved to (render/pins.py)."""
        return {"repo": self.repo, "revision": self.revision, "pinned": self.pinned,
                "path": self.container_path, "host_path": self.store_dir(deploy_root),
                "mount": self.mount(deploy_root)}


NO_WEIGHTS: dict[str, Any] = {"repo": "", "revision": "", "pinned": False, "path": "", "host_path": "",
                              "mount": ""}


def is_repo_id(text: str) -> bool:
    """`org/name` as the hub spells repositories (a local path is not one)."""
    return bool(_REPO.fullmatch(text)) and ".." not in text


def parse_pin(text: str) -> WeightsPin:
    """`org/name@revision` (or `org/name`, meaning the unpinned branch) -> a pin; ValueError otherwise."""
    repo, _, revision = text.partition("@")
    if not is_repo_id(repo):
        raise ValueError(f"{text!r}: expected a hub repository like org/name[@revision]")
    revision = revision or UNPINNED
    if not _REVISION.fullmatch(revision):
        raise ValueError(f"{text!r}: bad revision {revision!r} (a commit: 40 hex digits)")
    return WeightsPin(repo, revision)


def catalogue_path(role_dir: Path) -> Path:
    return role_dir / "models.yml"


def catalogue_revisions(path: Path) -> dict[str, str]:
    """`repo -> revision` from a model catalogue (entries without `revision:` are left out)."""
    try:
        stat = path.stat()
    except OSError:
        return {}
    return dict(_read_revisions(str(path), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=8)
def _read_revisions(path: str, _mtime: int, _size: int) -> tuple[tuple[str, str], ...]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        return ()
    return tuple((str(repo), str(body["revision"])) for repo, body in models.items()
                 if isinstance(body, dict) and body.get("revision"))


def pin_for(repo: str, revision: str | None, pinned_in_catalogue: dict[str, str]) -> WeightsPin | None:
    """The service's pin: its own revision, else the catalogue's, else the unpinned branch.

    None for a model that is not a hub repository (a local directory): nothing to stage."""
    repo = repo.strip()
    if not is_repo_id(repo.partition("@")[0]):
        return None
    if "@" in repo:
        return parse_pin(repo)
    chosen = (revision or "").strip() or pinned_in_catalogue.get(repo) or UNPINNED
    return parse_pin(f"{repo}@{chosen}")
