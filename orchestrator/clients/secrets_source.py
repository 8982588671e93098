"""Where deploys get secret values: the playbook's `secrets:` block mapped onto Vault KV v2.

`render.services.secrets_of(services)` lists the secrets a set of services needs (env
files and probe bearer keys); `read(names)` fetches them through the one Vault reader
(`vault_kv.KvReader`: one request per KV path, all at once, with the token of the one
rule) and fails before any node is touched when Vault is sealed, refuses the token, or
lacks a key. `missing(names)` is preflight's question (names only, never values);
`push` writes with hvac's check-and-set.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from orchestrator.clients.http import Tls
from orchestrator.clients.vault import VaultClient
from orchestrator.clients.vault_kv import KvReader, VaultAccess, token_for
from orchestrator.config.playbook import SecretSpec
from orchestrator.config.project import Project
from orchestrator.errors import InputError, ServiceError
from orchestrator.secrets import Secret


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

    @property
    def access(self) -> VaultAccess:
        return VaultAccess(addr=self.addr, mount=self.mount, token_file=self.token_file,
                           tls=Tls(ca_cert=self.ca_cert, client_cert=self.client_cert))

    def tls(self) -> dict[str, object]:
        """hvac/requests TLS arguments from the inventory (verify against ca_cert; client cert)."""
        return {"verify": str(self.ca_cert) if self.ca_cert else True,
                "cert": tuple(str(p) for p in self.client_cert) if self.client_cert else None}

    def full_path(self, spec: SecretSpec) -> str:
        return f"{self.base_path}/{spec.path}".strip("/")

    def paths(self, names: set[str]) -> dict[str, tuple[str, str]]:
        """secret name -> (its KV path, its key): what the reader is asked (and the plan record keeps)."""
        unknown = sorted(n for n in names if n not in self.declared)
        if unknown:
            raise InputError(f"secrets used but not declared in the playbook: {', '.join(unknown)}")
        return {n: (self.full_path(self.declared[n]), self.declared[n].key) for n in sorted(names)}

    def reader(self) -> KvReader:
        access = self.access
        return KvReader(access, token_for(access))

    def client(self) -> VaultClient:
        """hvac's client, for the admin commands (push, list): same token, same TLS."""
        client = VaultClient(self.addr, token_for(self.access), **self.tls())  # type: ignore[arg-type]
        client.require_unsealed()
        return client

    def read(self, names: set[str]) -> dict[str, Secret]:
        wanted = self.paths(names)
        if not wanted:
            return {}
        by_path = self.reader().read_many(path for path, _ in wanted.values())
        out: dict[str, Secret] = {}
        for name, (path, key) in wanted.items():
            values = by_path[path]
            if values is None:
                raise ServiceError(f"Vault at {self.addr}: no secret at {self.mount}/data/{path} (secret {name})",
                                   hint="push it with `swarm secrets push --env-file FILE` before deploying")
            if key not in values:
                raise ServiceError(
                    f"Vault at {self.addr}: {self.mount}/{path} has no key {key!r} (secret {name})",
                    hint="push it with `swarm secrets push --env-file FILE` before deploying")
            out[name] = Secret(values[key].reveal(), name)
        return out

    async def read_async(self, names: set[str]) -> dict[str, Secret]:
        """`read`, in a thread (while the SSH connections open)."""
        return await asyncio.to_thread(self.read, names)

    def missing(self, names: set[str]) -> list[str]:
        """Names of secrets Vault lacks (never their values)."""
        wanted = self.paths(names)
        by_path = self.reader().read_many(path for path, _ in wanted.values())
        return sorted(n for n, (path, key) in wanted.items() if key not in (by_path[path] or {}))


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


async def read_for_gate(source: SecretSource, bearer: set[str]) -> dict[str, Secret]:
    """The keys a gate's probes send (`bearer`, read strictly), after every secret the playbook
    declares has been read for the scrubber (best effort).

    A rollback or restore gates services whose logs it may show (a failed gate, `docker logs`):
    an application that logs its database password would show it in the CLI, the JSON output
    and the audit log unless the scrub registry knows that value too. A deploy reads them for
    its env files; a rollback or restore needs only the probe keys, so they are read here.
    Vault down or a key missing does not stop the gate (it never needed them)."""
    await remember_declared(source)
    return await source.read_async(bearer) if bearer else {}


async def remember_declared(source: SecretSource) -> int:
    """Read every secret the playbook declares into `Secret`s (so REGISTRY masks each one),
    through the one reader; how many were read. Nothing raises: this only widens what output
    is scrubbed of."""
    paths = sorted({source.full_path(spec) for spec in source.declared.values()})
    try:
        reader = source.reader()
        answers = await asyncio.wait_for(asyncio.to_thread(reader.read_many, paths), FLEET_READ_TIMEOUT_S)
    except (ServiceError, InputError, TimeoutError):
        return 0
    return sum(len(a) for a in answers.values() if a)
