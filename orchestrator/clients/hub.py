"""The Hugging Face hub, through `huggingface_hub` — the client users already trust.

`HubClient.commit_of(repo, revision)` asks which commit a branch names now (`model_info`, the
call `git ls-remote` would be); `HubClient.snapshot(repo, revision)` resolves a revision to its commit and lists the
repository's files with their size and, for LFS files (the weights), the sha256 the hub itself
records (`model_info(..., files_metadata=True)`); git files (config.json, tokenizer files)
carry no sha256 there and get theirs when they are downloaded. `download` fetches one file
of a pinned commit into a directory (`hf_hub_download(local_dir=...)`: resumable, the
client's own retries), and `sha256_of` hashes what arrived.

The endpoint is the inventory's `models.hub` (the lab points it at its stand-in); the token is
the fleet's `hf_token` from Vault, passed explicitly so no ambient `HF_TOKEN` or cached login
leaks into a run. Errors become `ServiceError`s that say what to do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ServiceError
from orchestrator.secrets import Secret

DEFAULT_ENDPOINT = "https://huggingface.co"
_BLOCK = 1 << 20


@dataclass(frozen=True)
class HubFile:
    """One file of a repository at a commit: its path, size and sha256 (None: a git file)."""

    name: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class HubSnapshot:
    repo: str
    commit: str
    files: tuple[HubFile, ...]


class HubClient:
    """One hub endpoint, with or without a token."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, token: Secret | None = None,
                 timeout: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self.timeout = timeout

    def _token_value(self) -> str | bool:
        return self._token.reveal() if self._token is not None else False

    def snapshot(self, repo: str, revision: str) -> HubSnapshot:
        """The commit `revision` names and every file it holds (sizes, LFS sha256)."""
        # huggingface_hub (with httpx2) takes 0.2-0.34 s to import (measured on this 2-core
        # machine): only a run that reaches the hub pays it, never a deploy of staged weights.
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.endpoint, token=self._token_value())
        try:
            info = api.model_info(repo, revision=revision, files_metadata=True, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - the client raises many kinds; each is explained
            raise self._error(repo, revision, exc) from None
        files = tuple(HubFile(s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None)
                      for s in info.siblings or [])
        if not info.sha:
            raise ServiceError(f"hub {self.endpoint}: {repo}@{revision} answered without a commit")
        return HubSnapshot(repo, info.sha, files)

    def commit_of(self, repo: str, revision: str) -> str:
        """The commit `revision` (a branch, a tag or a commit) names now: one `model_info` call."""
        from huggingface_hub import HfApi  # see snapshot(): a measured import cost

        api = HfApi(endpoint=self.endpoint, token=self._token_value())
        try:
            info = api.model_info(repo, revision=revision, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - the client raises many kinds; each is explained
            raise self._error(repo, revision, exc) from None
        if not info.sha:
            raise ServiceError(f"hub {self.endpoint}: {repo}@{revision} answered without a commit")
        return info.sha

    def download(self, repo: str, commit: str, name: str, directory: Path) -> Path:
        """Fetch one file of `repo` at `commit` into `directory` (kept under its own name)."""
        from huggingface_hub import hf_hub_download  # see snapshot(): a measured import cost

        try:
            path = hf_hub_download(repo, name, revision=commit, endpoint=self.endpoint,
                                   token=self._token_value(), local_dir=directory, etag_timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001
            raise self._error(repo, commit, exc, name) from None
        return Path(path)

    def _error(self, repo: str, revision: str, exc: BaseException, name: str | None = None) -> ServiceError:
        from huggingface_hub.errors import (  # see snapshot(): a measured import cost
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        what = f"{repo}@{revision}" + (f" {name}" if name else "")
        if isinstance(exc, RevisionNotFoundError):
            return ServiceError(f"hub {self.endpoint}: {repo} has no revision {revision}",
                                hint="pin a commit the repository has (`revision:` in roles/vllm/models.yml)")
        if isinstance(exc, GatedRepoError):
            return ServiceError(f"hub {self.endpoint}: {repo} is gated: accept its licence on the hub",
                                hint="then push a token that may read it: `swarm secrets push` (hf_token)")
        if isinstance(exc, RepositoryNotFoundError):
            return ServiceError(f"hub {self.endpoint}: no repository {repo} (or it is private)",
                                hint="check the name; a private repository needs hf_token in Vault")
        if isinstance(exc, HfHubHTTPError):
            return ServiceError(f"hub {self.endpoint}: {what}: {exc}".splitlines()[0])
        return ServiceError(f"hub {self.endpoint} unreachable for {what}: {type(exc).__name__}: {exc}"[:400],
                            hint="stage from a node or the controller's mirror (docs/models.md, offline)")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(chunk)
    return digest.hexdigest()
