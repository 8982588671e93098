"""The plan record: what the last full run planned, so the next can ask whether anything differs.

A full deploy loads and validates the project, renders every node and hashes what it would
upload; when nothing changed, all of that reproduces what the last run computed. So each
full run leaves a *plan record* in the controller's cache (~/.cache/swarm/plans, 0600),
keyed by everything the result depends on — swarm's own code, the inventory, the playbook,
every file of the roles it may use, and the command line — holding, per node, exactly what
the run's first command asks (the `service hash` lines it expects, its directories), where
the node is (its SSH target), which Vault paths the hashes were computed with (and a digest
of those secret values, never a value), and what Consul should hold.

engine/first.py asks the record's question over the run's session; this module holds the
record (its key, its trust) and the reads beside the looks (Vault, Consul, the registry, the
hub). It imports no SSH library, so a deploy loads its record and dials its optional nodes
before asyncssh loads (engine/deploy.py). A record is only a shortcut to the same answer:
whenever it cannot vouch for one, the full plan runs.

A record decides where the Vault token is sent, so one is used only when the user owns it
(and its directory) and nobody else may write either, and only when its Vault and Consul
addresses are the ones the inventory names (read without a YAML library: `declared_addresses`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.facts.node import LookRequest, NodeState
from orchestrator.secrets import Secret

FORMAT = 2
DEFAULT_VAULT = "http://127.0.0.1:8200"    # config/inventory.py's defaults (a test keeps them equal)
DEFAULT_CONSUL = "http://127.0.0.1:8500"
PACKAGE = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the key


def code_fingerprint() -> str:
    """swarm's own code: every module's path, size and mtime (a changed swarm renders anew)."""
    digest = hashlib.sha256()
    for rel, path in tree(PACKAGE, ".py"):
        info = os.stat(path)
        digest.update(f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def inputs_digest(root: Path, inventory: Path, playbook: Path, args: Sequence[str]) -> str:
    """What a deploy's plan depends on, by content: inventory, playbook, the roles on the search
    path (the project's roles/, then swarm's shared ones), the arguments."""
    digest = hashlib.sha256(f"swarm-plan-{FORMAT}\0{code_fingerprint()}\0".encode())
    for arg in args:
        digest.update(arg.encode() + b"\0")
    roles = [root / "roles"]
    if (PACKAGE.parent / "roles").resolve() != roles[0].resolve():  # swarm's shared roles (config/project.py)
        roles.append(PACKAGE.parent / "roles")
    files = [str(inventory), str(playbook), *(path for d in roles for _, path in tree(d))]
    for path in files:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digest.update(path.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()


def tree(top: Path, suffix: str = "") -> list[tuple[str, str]]:
    """Every file under `top` ending in `suffix` (symlinked directories not followed), as
    (relative path, path), sorted: os.scandir, a third of pathlib's rglob's time over swarm's
    ~180 modules (2.4 against 0.8 ms, 2026-12-06), and every deploy computes its key first."""
    found: list[tuple[str, str]] = []
    pending = [(str(top), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:   # not there (a project without roles/), or unreadable: nothing to hash
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, f"{prefix}{entry.name}/"))
            elif entry.name.endswith(suffix):
                found.append((prefix + entry.name, entry.path))
    return sorted(found)


def secrets_digest(secrets: Mapping[str, Secret]) -> str:
    digest = hashlib.sha256(b"swarm-secrets\0")
    for name in sorted(secrets):
        digest.update(name.encode() + b"\0" + secrets[name].reveal().encode() + b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------- the record


@dataclass
class NodePlan:
    target: dict[str, Any]                 # SshTarget.as_record()
    deploy_root: str
    project: str
    expected: list[str]
    directories: list[str]
    network: str | None
    docker: bool
    services: list[str]                    # every selected service on the node (must run)
    optional: bool = False

    def look(self) -> LookRequest:
        return LookRequest(deploy_root=self.deploy_root, expected=tuple(self.expected),
                           directories=tuple(self.directories), network=self.network, docker=self.docker)


@dataclass
class RecordedVault:
    addr: str
    mount: str
    paths: dict[str, list[str]]            # secret name -> [full path, key]
    token_file: str | None = None
    ca_cert: str | None = None
    client_cert: list[str] | None = None   # [certificate, key]


@dataclass
class RecordedConsul:
    addr: str
    token_file: str | None = None
    token_env: str = "CONSUL_HTTP_TOKEN"
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)   # service id -> fields
    ca_cert: str | None = None
    client_cert: list[str] | None = None


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


@dataclass
class PlanRecord:
    key: str
    phases: list[int]
    holder_phases: list[int]
    nodes: dict[str, NodePlan]
    vault: RecordedVault | None
    secrets: str                            # digest of the secret values the hashes used
    consul: RecordedConsul | None = None
    images: dict[str, str] = field(default_factory=dict)   # image -> the digest the nodes run (render/pins.py)
    insecure: list[str] = field(default_factory=list)      # plain-HTTP registries (registry.insecure)
    weights: dict[str, str] = field(default_factory=dict)  # repo@branch -> the commit the nodes serve (models/resolve.py)
    hub: str = ""                                           # the hub those were asked of (models.hub)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PlanRecord:
        data = json.loads(text)
        nodes = {k: NodePlan(**v) for k, v in data.pop("nodes").items()}
        vault = RecordedVault(**data.pop("vault")) if data.get("vault") else None
        data.pop("vault", None)
        consul = RecordedConsul(**data.pop("consul")) if data.get("consul") else None
        data.pop("consul", None)
        return cls(nodes=nodes, vault=vault, consul=consul, **data)


class PlanCache:
    """Plan records under the controller's cache directory (0600 in a 0700 directory, a few kept)."""

    KEEP = 8

    def __init__(self, directory: Path | None = None) -> None:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        self.directory = directory or base / "swarm" / "plans"

    def path(self, key: str) -> Path:
        return self.directory / f"{key[:32]}.json"

    def load(self, key: str, inventory: Path) -> PlanRecord | None:
        """The record for `key`, if one can be trusted: ours, writable by us alone, and naming
        the Vault and Consul the inventory names."""
        path = self.path(key)
        if not (is_ours(path) and is_ours(path.parent)):
            return None
        try:
            record = PlanRecord.from_json(path.read_text())
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        if record.key != key or not same_services(record, inventory):
            return None
        return record

    def save(self, record: PlanRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".plan-")
        with os.fdopen(fd, "w") as fh:
            fh.write(record.to_json())
        os.replace(tmp, self.path(record.key))
        for old in sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)[: -self.KEEP]:
            old.unlink(missing_ok=True)


def is_ours(path: Path) -> bool:
    """Owned by this user, and neither the group nor others may write it (nor is it a link)."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return (info.st_uid == os.geteuid() and not info.st_mode & 0o022
            and (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)))


def same_services(record: PlanRecord, inventory: Path) -> bool:
    """The record's Vault and Consul are where the inventory says (`declared_addresses`: what it
    sets, else the loader's defaults); an inventory too unusual to read that way trusts none."""
    try:
        declared = declared_addresses(inventory.read_text())
    except (OSError, UnicodeDecodeError):
        return False
    if declared is None:
        return False
    vault = declared.get("vault", DEFAULT_VAULT).rstrip("/")
    consul = declared.get("consul", DEFAULT_CONSUL).rstrip("/")
    return ((record.vault is None or record.vault.addr.rstrip("/") == vault)
            and (record.consul is None or record.consul.addr.rstrip("/") == consul))


_TOP = re.compile(r"([A-Za-z_][\w-]*):\s*(#.*)?")
_ADDR = re.compile(r"""  addr: +(["']?)(https?://[^\s"'#]+)\1 *(#.*)?""")


def declared_addresses(text: str) -> dict[str, str] | None:
    """`vault.addr` and `consul.addr` as a block-style inventory writes them (a top-level key, the
    addr two spaces in, a plain or quoted URL): the form `swarm init`, `lab up` and the examples
    write. Read here without a YAML library (its import alone is ~8 ms of a no-op deploy, with
    python -X importtime, 2026-12-06); anything else in those blocks — flow style, anchors,
    aliases, tags, tabs, a key twice — is None, and then the record is not used (the full
    plan loads the inventory as always)."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    block: str | None = None
    for line in text.splitlines():
        if "\t" in line:
            return None
        if line[:1] not in ("", " ", "#", "-"):
            top = _TOP.fullmatch(line)
            block = top.group(1) if top else line.split(":", 1)[0]
            if block in ("vault", "consul") and (top is None or block in seen):
                return None
            seen.add(block)
        elif block in ("vault", "consul") and line.lstrip().startswith(("addr", "<<", "&", "*", "!")):
            match = _ADDR.fullmatch(line)
            if match is None or block in found:
                return None
            found[block] = match.group(2)
    return found


# --------------------------------------------------------------------------- the reads


@dataclass
class Reads:
    """The reads beside the looks, each in a thread of the loop's executor: the secrets (Vault),
    what each image tag and weights branch names now (the registry, the hub), and Consul's
    registrations (`reader`/`hub`: the Vault and hub boundaries, for tests).

    The secrets are read as the nodes connect (a rotated secret needs no look); the other three
    once every node has answered (`start_rest`), beside the looks' commands: started with the
    connects, their imports and requests slowed the SSH handshakes ~25 ms of a ~390 ms no-op,
    while the looks leave the controller idle (bench/compare_versions.py, 2026-12-06)."""

    record: PlanRecord
    secrets: asyncio.Future[Any]
    hub: Any = None
    images: asyncio.Future[Any] | None = None       # these three: once `start_rest` ran
    branches: asyncio.Future[Any] | None = None
    consul: asyncio.Future[Any] | None = None

    @classmethod
    def start(cls, record: PlanRecord, reader: Any = None, hub: Any = None) -> Reads:
        loop = asyncio.get_running_loop()
        return cls(record, loop.run_in_executor(None, reader or read_secrets, record.vault), hub)

    def start_rest(self) -> None:
        """Read the registry, the hub and Consul (once)."""
        if self.images is not None:
            return
        loop = asyncio.get_running_loop()
        self.images = loop.run_in_executor(None, tag_digests, self.record)
        self.branches = loop.run_in_executor(None, self.hub or branch_commits, self.record)
        self.consul = loop.run_in_executor(None, consul_services, self.record.consul)

    async def settle(self) -> None:
        """Every read that started has ended (none is left running behind the plan)."""
        started = (f for f in (self.secrets, self.images, self.branches, self.consul) if f is not None)
        await asyncio.gather(*(settled(f) for f in started))


async def settled(work: Any) -> Any:
    """The answer, or None if the read failed."""
    try:
        return await work
    except Exception:  # any doubt: the full plan decides, with its own messages
        return None


# The reads below run in threads while the SSH connections open, and import their clients there:
# the Vault reader, the HTTP client, Consul's and the registry's are ~3.5 ms of imports (python
# -X importtime, 2026-12-06) that would otherwise stand before the connects.


def read_secrets(vault: RecordedVault | None) -> dict[str, Secret]:
    """The recorded secrets, through the one Vault reader with the one token rule."""
    if vault is None or not vault.paths:
        return {}
    from orchestrator.clients.vault_kv import (  # in its thread: ~3.5 ms above
        KvReader,
        VaultAccess,
        token_for,
    )

    access = VaultAccess(addr=vault.addr, mount=vault.mount, token_file=_path(vault.token_file),
                         tls=_tls(vault.ca_cert, vault.client_cert))
    by_path = KvReader(access, token_for(access)).read_many(path for path, _ in vault.paths.values())
    return {name: Secret((by_path[path] or {})[key].reveal(), name) for name, (path, key) in sorted(vault.paths.items())}


def consul_services(consul: RecordedConsul | None) -> dict[str, Any]:
    """The agent's registrations (nothing to read when the record expects none)."""
    if consul is None or not consul.expected:
        return {}
    from orchestrator.clients.consul_read import (  # in its thread: ~3.5 ms above
        ConsulAccess,
        agent_services,
    )

    return agent_services(ConsulAccess(addr=consul.addr, token_file=_path(consul.token_file),
                                       token_env=consul.token_env, tls=_tls(consul.ca_cert, consul.client_cert)))


def branch_commits(record: PlanRecord) -> dict[str, str | None]:
    """What each recorded weights branch names now (one model-info GET each)."""
    if not record.weights:
        return {}
    from orchestrator.clients.revisions import hub_commits  # in its thread: ~3.5 ms above

    return hub_commits(record.hub, record.weights)


def tag_digests(record: PlanRecord) -> dict[str, str | None]:
    """What each recorded image's tag names now (one registry HEAD each)."""
    if not record.images:
        return {}
    from orchestrator.clients.tags import head_digests  # in its thread: ~3.5 ms above

    return head_digests(record.images, record.insecure)


def _tls(ca: str | None, cert: list[str] | None) -> Any:
    from orchestrator.clients.http import Tls  # in the reader's thread: ~3.5 ms above

    return Tls(ca_cert=_path(ca), client_cert=(Path(cert[0]), Path(cert[1])) if cert else None)


def consul_matches(consul: RecordedConsul | None, states: Mapping[str, NodeState],
                   services: Mapping[str, Any]) -> bool:
    """Consul holds every registration as the last run left it (release ids as the nodes say)."""
    if consul is None or not consul.expected:
        return True
    for sid, want in consul.expected.items():
        have = services.get(sid)
        node = str(want.get("node", ""))
        release = states[node].current_id if node in states else None
        if have is None or _fields(have) != want["fields"] or have.get("Meta", {}).get("swarm_release") != release:
            return False
    return True


def _fields(service: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (service.get("Meta") or {}).items() if k != "swarm_release"}
    return {"Service": service.get("Service"), "Address": service.get("Address"), "Port": service.get("Port"),
            "Tags": sorted(service.get("Tags") or []), "Meta": meta}


def expected_registration(payload: Mapping[str, Any], node: str) -> dict[str, Any]:
    """What `consul_matches` compares, from a registration swarm makes (its agent payload)."""
    return {"node": node, "fields": _fields({"Service": payload["Name"], "Address": payload["Address"],
                                             "Port": payload["Port"], "Tags": payload.get("Tags"),
                                             "Meta": payload.get("Meta")})}
