"""Where deploys get secret values: the playbook's `secrets:` block mapped onto Vault KV v2.

`names_for(services)` lists the secrets a set of services needs (env files and probe
bearer keys); `read(names)` fetches them, one KV read per Vault path, and fails before
any node is touched when Vault is sealed, refuses the token, or lacks a key.
"""

from __future__ import annotations

import asyncio
import shlex
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.config.playbook import SecretSpec
from orchestrator.config.project import Project
from orchestrator.config.roles import secret_names
from orchestrator.config.yamlfile import read_bounded
from orchestrator.errors import InputError, ServiceError
from orchestrator.render.services import Service
from orchestrator.secrets import Secret

if TYPE_CHECKING:
    from orchestrator.clients.vault import VaultClient


def require_private(path: Path, what: str) -> None:
    """Refuse a credential file that the group or others can read (or write)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"the {what} file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise InputError(
            f"the {what} file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): "
            "anyone on this machine could use it",
            hint=f"chmod 600 {shlex.quote(str(path))}")


def read_token_file(path: Path, what: str = "Vault token") -> Secret:
    """A token file holds the token, or the JSON `swarm vault init` wrote (its root_token).
    It must be private to its owner (mode 0600 or stricter)."""
    import json

    require_private(path, what)
    try:
        text = read_bounded(path, f"{what} file", 64 * 1024).decode("utf-8", "replace").strip()
    except InputError as exc:
        raise InputError(f"cannot read the {what} file {path}: {exc.message}") from None
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["root_token"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path} is JSON without a root_token") from None
    if not text:
        raise InputError(f"the {what} file {path} is empty")
    return Secret(text, "vault-token")


@dataclass
class SecretSource:
    addr: str
    mount: str
    base_path: str
    declared: dict[str, SecretSpec]
    token_file: Path | None = None
    ca_cert: Path | None = None
    client_cert: tuple[Path, Path] | None = None

    @classmethod
    def from_project(cls, project: Project) -> SecretSource:
        inv = project.inventory
        vault = inv.spec.vault
        cert = inv.resolve_path(vault.client_cert)
        key = inv.resolve_path(vault.client_key)
        return cls(addr=vault.addr, mount=vault.mount, base_path=vault.path.strip("/"),
                   declared=dict(project.playbook.spec.secrets),
                   token_file=inv.resolve_path(vault.token_file),
                   ca_cert=inv.resolve_path(vault.ca_cert),
                   client_cert=(cert, key) if cert and key else None)

    def tls(self) -> dict[str, object]:
        """hvac/requests TLS arguments from the inventory (verify against ca_cert; client cert)."""
        return {"verify": str(self.ca_cert) if self.ca_cert else True,
                "cert": tuple(str(p) for p in self.client_cert) if self.client_cert else None}

    def full_path(self, spec: SecretSpec) -> str:
        return f"{self.base_path}/{spec.path}".strip("/")

    def names_for(self, services: Iterable[Service]) -> set[str]:
        names: set[str] = set()
        for svc in services:
            for ref in svc.secret_env.values():
                names.update(secret_names(ref))
            names.update(p.bearer_secret for p in svc.probes if p.bearer_secret)
        return names

    def client(self) -> VaultClient:
        from orchestrator.clients.vault import connect

        token = None
        if self.token_file is not None and self.token_file.exists():
            token = read_token_file(self.token_file)
        client = connect(self.addr, token=token, **self.tls())  # type: ignore[arg-type]
        client.require_unsealed()
        return client

    def read(self, names: set[str]) -> dict[str, Secret]:
        unknown = sorted(n for n in names if n not in self.declared)
        if unknown:
            raise InputError(f"secrets used but not declared in the playbook: {', '.join(unknown)}")
        client = self.client()
        by_path: dict[str, dict[str, Secret]] = {}
        out: dict[str, Secret] = {}
        for name in sorted(names):
            spec = self.declared[name]
            path = self.full_path(spec)
            if path not in by_path:
                by_path[path] = client.read_secrets(self.mount, path)
            values = by_path[path]
            if spec.key not in values:
                raise ServiceError(
                    f"Vault at {self.addr}: {self.mount}/{path} has no key {spec.key!r} (secret {name})",
                    hint="push it with `swarm secrets push --env-file FILE` before deploying")
            out[name] = Secret(values[spec.key].reveal(), name)
        return out

    async def read_async(self, names: set[str]) -> dict[str, Secret]:
        """`read`, with one request per KV path, all at once (while SSH connects)."""
        unknown = sorted(n for n in names if n not in self.declared)
        if unknown:
            raise InputError(f"secrets used but not declared in the playbook: {', '.join(unknown)}")
        if not names:
            return {}
        client = await asyncio.to_thread(self.client)
        paths = sorted({self.full_path(self.declared[n]) for n in names})
        answers = await asyncio.gather(*(asyncio.to_thread(client.read_secrets, self.mount, p) for p in paths))
        by_path = dict(zip(paths, answers, strict=True))
        out: dict[str, Secret] = {}
        for name in sorted(names):
            spec = self.declared[name]
            path = self.full_path(spec)
            if spec.key not in by_path[path]:
                raise ServiceError(
                    f"Vault at {self.addr}: {self.mount}/{path} has no key {spec.key!r} (secret {name})",
                    hint="push it with `swarm secrets push --env-file FILE` before deploying")
            out[name] = Secret(by_path[path][spec.key].reveal(), name)
        return out

    def missing(self, names: set[str]) -> list[str]:
        """Names of secrets Vault lacks (never their values)."""
        client = self.client()
        required: dict[str, set[str]] = {}
        for name in names:
            spec = self.declared[name]
            required.setdefault(self.full_path(spec), set()).add(spec.key)
        gaps = client.missing(self.mount, required)
        return sorted(n for n in names
                      if self.declared[n].key in gaps.get(self.full_path(self.declared[n]), set()))


def match_env_keys(env: dict[str, Secret], declared: dict[str, SecretSpec]) -> tuple[dict[str, Secret], list[str]]:
    """Env-file keys -> declared secret names (case-insensitive: LITELLM_MASTER_KEY -> litellm_master_key)."""
    lookup = {name.lower(): name for name in declared}
    matched: dict[str, Secret] = {}
    unknown: list[str] = []
    for key, value in env.items():
        name = lookup.get(key.lower())
        if name is None:
            unknown.append(key)
        else:
            matched[name] = value
    return matched, sorted(unknown)


def push(source: SecretSource, values: dict[str, Secret]) -> list[tuple[str, int, list[str], bool]]:
    """Write values grouped by Vault path, check-and-set; unchanged paths are not rewritten.

    Returns (path, version, key names, changed) — never values.
    """
    client = source.client()
    groups: dict[str, dict[str, Secret]] = {}
    for name, value in values.items():
        spec = source.declared[name]
        groups.setdefault(source.full_path(spec), {})[spec.key] = value
    written = []
    for path, data in sorted(groups.items()):
        result = client.push(source.mount, path, data)
        written.append((path, result.version, sorted(data), result.changed))
    return written


# ---------------------------------------------------------------- what a gate may show

FLEET_READ_TIMEOUT_S = 10.0


async def read_for_gate(source: SecretSource, services: Iterable[Service]) -> dict[str, Secret]:
    """The keys a gate's probes send (read strictly), after every secret the playbook declares
    has been read for the scrubber (best effort).

    A rollback or restore gates services whose logs it may show (a failed gate, `docker logs`):
    an application that logs its database password would show it in the CLI, the JSON output
    and the audit log unless the scrub registry knows that value too. A deploy reads them for
    its env files; a rollback or restore needs only the probe keys, so they are read here.
    Vault down or a key missing does not stop the gate (it never needed them)."""
    services = list(services)
    bearer = {p.bearer_secret for s in services for p in s.probes if p.bearer_secret}
    await remember_declared(source)
    return await source.read_async(bearer) if bearer else {}


async def remember_declared(source: SecretSource) -> int:
    """Read every secret the playbook declares into `Secret`s (so REGISTRY masks each one);
    how many were read. Nothing raises: this only widens what output is scrubbed of."""
    try:
        client = await asyncio.wait_for(asyncio.to_thread(source.client), FLEET_READ_TIMEOUT_S)
    except (ServiceError, InputError, TimeoutError):
        return 0
    paths = sorted({source.full_path(spec) for spec in source.declared.values()})
    reads = [asyncio.to_thread(client.read_secrets, source.mount, p) for p in paths]
    try:
        answers = await asyncio.wait_for(asyncio.gather(*reads, return_exceptions=True), FLEET_READ_TIMEOUT_S)
    except TimeoutError:
        return 0
    return sum(len(a) for a in answers if isinstance(a, dict))
