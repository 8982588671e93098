"""The no-op fast path: a deploy that changes nothing costs what SSH costs.

A full deploy loads and validates the project, renders every node and hashes what it
would upload; when nothing changed, all of that reproduces what the last run computed.
So each full run leaves a *plan record* in the controller's cache, keyed by everything
the result depends on — swarm's own code, the inventory, the playbook, every file under
roles/, and the command line — holding, per node, exactly what the run's first command
asks (the `service hash` lines it expects, its directories), where the node is (SSH
target), which Vault paths the hashes were computed with (and a digest of those secret
values), and what Consul should hold.

The next run with the same key does only this, importing neither the validation models
nor the template engine: read the secrets (one HTTP request per Vault path, in threads,
while the SSH connections open), check their digest, send each node the same first
command, and read Consul's registrations. If every node answers `unchanged`, runs every
service, and Consul holds what it should, the run is over. Anything else — a node that
differs (it took its lock), a container not running, a rotated secret, a lost
registration, an optional node off — hands the open connections, the states read and the
secrets over to the full deploy, which goes on from there. A record is only ever a
shortcut to the same answer: whenever it cannot vouch for one, the full path runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.clients.tags import head_digests
from orchestrator.facts.node import LookRequest, NodeState, look_script, parse_look
from orchestrator.secrets import Secret
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.ssh import SshTarget

FORMAT = 1
PACKAGE = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the key


def code_fingerprint() -> str:
    """swarm's own code: every module's path, size and mtime (a changed swarm renders anew)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(PACKAGE)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
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
    for path in (inventory, playbook, *(p for d in roles for p in sorted(d.rglob("*")))):
        if path.is_file():
            digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def secrets_digest(secrets: Mapping[str, Secret]) -> str:
    digest = hashlib.sha256(b"swarm-secrets\0")
    for name in sorted(secrets):
        digest.update(name.encode() + b"\0" + secrets[name].reveal().encode() + b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------- the record


@dataclass
class NodePlan:
    target: dict[str, Any]                 # SshTarget fields
    deploy_root: str
    project: str
    expected: list[str]
    directories: list[str]
    network: str | None
    docker: bool
    services: list[str]                    # every selected service on the node (must run)
    optional: bool = False


@dataclass
class VaultAccess:
    addr: str
    mount: str
    paths: dict[str, list[str]]            # secret name -> [full path, key]
    token_file: str | None = None
    ca_cert: str | None = None


@dataclass
class ConsulAccess:
    addr: str
    token_file: str | None = None
    token_env: str = "CONSUL_HTTP_TOKEN"
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)   # service id -> fields
    ca_cert: str | None = None


@dataclass
class PlanRecord:
    key: str
    phases: list[int]
    holder_phases: list[int]
    nodes: dict[str, NodePlan]
    vault: VaultAccess | None
    secrets: str                            # digest of the secret values the hashes used
    consul: ConsulAccess | None = None
    images: dict[str, str] = field(default_factory=dict)   # image -> the digest the nodes run (render/pins.py)
    insecure: list[str] = field(default_factory=list)      # plain-HTTP registries (registry.insecure)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PlanRecord:
        data = json.loads(text)
        nodes = {k: NodePlan(**v) for k, v in data.pop("nodes").items()}
        vault = VaultAccess(**data.pop("vault")) if data.get("vault") else None
        data.pop("vault", None)
        consul = ConsulAccess(**data.pop("consul")) if data.get("consul") else None
        data.pop("consul", None)
        return cls(nodes=nodes, vault=vault, consul=consul, **data)


class PlanCache:
    """Plan records under the controller's cache directory (0600, a few kept)."""

    KEEP = 8

    def __init__(self, directory: Path | None = None) -> None:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        self.directory = directory or base / "swarm" / "plans"

    def path(self, key: str) -> Path:
        return self.directory / f"{key[:32]}.json"

    def load(self, key: str) -> PlanRecord | None:
        try:
            record = PlanRecord.from_json(self.path(key).read_text())
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return record if record.key == key else None

    def save(self, record: PlanRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".plan-")
        with os.fdopen(fd, "w") as fh:
            fh.write(record.to_json())
        os.replace(tmp, self.path(record.key))
        for old in sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)[: -self.KEEP]:
            old.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the run


@dataclass
class FastOutcome:
    """What the fast path learned; `noop` when the run is over, else the full path goes on."""

    noop: bool
    why: str
    fleet: Fleet
    states: dict[str, NodeState]
    secrets: dict[str, Secret] | None
    skipped: dict[str, str] = field(default_factory=dict)
    roots: dict[str, str] = field(default_factory=dict)     # node -> deploy_root


async def try_noop(record: PlanRecord, *, run_id: str, holder: str, fleet: Fleet | None = None,
                   reader: Any = None, forks: int | None = None) -> FastOutcome:
    """Connect, read the secrets, look at every node — the same first command a full run sends.

    `fleet` and `reader` (VaultAccess -> secrets) are the SSH and Vault boundaries, for tests;
    `forks` is `--forks` (hosts in parallel), as the full path uses it."""
    targets = [SshTarget(**{**n.target, "key": _path(n.target.get("key")),
                            "known_hosts": _path(n.target.get("known_hosts"))}) for n in record.nodes.values()]
    fleet = fleet or (Fleet.over_ssh(targets, forks=forks) if forks else Fleet.over_ssh(targets))
    roots = {n: p.deploy_root for n, p in record.nodes.items()}
    secrets_task = asyncio.ensure_future(asyncio.to_thread(reader or read_secrets, record.vault))
    images_task = asyncio.ensure_future(asyncio.to_thread(head_digests, record.images, record.insecure))
    await fleet.connect()
    secrets = await _settle(secrets_task)
    if secrets is None or secrets_digest(secrets) != record.secrets:
        return FastOutcome(False, "the secrets could not be checked or changed", fleet, {}, secrets, roots=roots)
    skipped = {n: e.message for n, e in fleet.unreachable.items() if record.nodes[n].optional}
    if set(fleet.unreachable) - set(skipped):
        return FastOutcome(False, "a node did not answer", fleet, {}, secrets, roots=roots)
    requests = {n: _request(p, run_id, holder) for n, p in record.nodes.items() if n not in skipped}
    consul_task = asyncio.ensure_future(asyncio.to_thread(consul_services, record.consul))  # while the nodes look
    states = await _looks(fleet, requests)
    why = _difference(record, states, skipped) or _moved(record, await _settle(images_task))
    held = await _settle(consul_task)
    consul_ok = held is not None and consul_matches(record.consul, states, held)
    if why is None and not consul_ok:
        why = "Consul does not hold every registration"
    return FastOutcome(why is None, why or "unchanged", fleet, states, secrets, skipped, roots)


def _moved(record: PlanRecord, heads: Mapping[str, str | None] | None) -> str | None:
    """A tag that names another digest than the nodes run (an unreachable registry: no verdict)."""
    moved = [ref for ref, digest in record.images.items() if (heads or {}).get(ref) not in (None, digest)]
    return f"the tag of {moved[0]} names another image now" if moved else None


def _path(value: Any) -> Path | None:
    return Path(value) if value else None


async def _settle(task: asyncio.Future[Any]) -> Any:
    try:
        return await task
    except Exception:  # any doubt: the full path decides, with its own messages
        return None


def _request(plan: NodePlan, run_id: str, holder: str) -> LookRequest:
    return LookRequest(deploy_root=plan.deploy_root, run_id=run_id, holder=holder,
                       expected=tuple(plan.expected), directories=tuple(plan.directories),
                       network=plan.network, docker=plan.docker)


async def _looks(fleet: Fleet, requests: Mapping[str, LookRequest]) -> dict[str, NodeState]:
    async def one(name: str) -> NodeState:
        request = requests[name]
        result = await fleet[name].run(look_script(request), check=False, timeout=120)
        return parse_look(request, result.steps, name)

    outcome = await fleet.map(lambda t: one(t.host), list(requests))
    return dict(outcome.succeeded)


def _difference(record: PlanRecord, states: Mapping[str, NodeState], skipped: Mapping[str, str]) -> str | None:
    for name, plan in record.nodes.items():
        if name in skipped:  # an optional node that is off: skipped, as the full path would
            continue
        state = states.get(name)
        if state is None:
            return f"{name} did not answer"
        if state.lock.taken or state.lock.error:
            return f"{name} runs something else"
        if not state.infra_ready:
            return f"{name} lacks its infrastructure"
        stopped = [s for s in plan.services if not state.is_running(s, plan.project)]
        if stopped:
            return f"{name}: {', '.join(stopped)} not running"
    return None


# --------------------------------------------------------------------------- Vault, Consul


def _connection(url: str, ca_cert: str | None, timeout: float = 10.0) -> tuple[Any, str]:
    import ssl  # here, in the reader's thread, not on the way to the SSH connects
    from http.client import HTTPConnection, HTTPSConnection

    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_cert) if ca_cert else ssl.create_default_context()
        return HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=timeout, context=context), parts.path
    return HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout), parts.path


def _get(url: str, path: str, headers: dict[str, str], ca_cert: str | None = None) -> Any:
    conn, prefix = _connection(url, ca_cert)
    try:
        conn.request("GET", prefix.rstrip("/") + path, headers=headers)
        answer = conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise OSError(f"{path}: HTTP {answer.status}")
        return json.loads(body)
    finally:
        conn.close()


def read_secrets(vault: VaultAccess | None) -> dict[str, Secret]:
    """One GET per KV v2 path with the token swarm would use; any problem is the full path's to report."""
    if vault is None or not vault.paths:
        return {}
    token = _vault_token(vault)
    paths = sorted({path for path, _ in vault.paths.values()})

    def one(path: str) -> dict[str, Any]:
        answer = _get(vault.addr, f"/v1/{vault.mount}/data/{path}", {"X-Vault-Token": token}, vault.ca_cert)
        return dict(answer["data"]["data"])

    if len(paths) == 1:
        by_path = {paths[0]: one(paths[0])}
    else:  # one request per KV path, all at once
        with ThreadPoolExecutor(max_workers=min(8, len(paths)), thread_name_prefix="vault") as pool:
            by_path = dict(zip(paths, pool.map(one, paths), strict=True))
    return {name: Secret(str(by_path[path][key]), name) for name, (path, key) in sorted(vault.paths.items())}


def _vault_token(vault: VaultAccess) -> str:
    if vault.token_file:
        path = Path(vault.token_file)
        if path.stat().st_mode & 0o077:  # the full path refuses it, saying how to fix it
            raise OSError(f"{path} is readable by others")
        text = path.read_text().strip()
        return str(json.loads(text)["root_token"]) if text.startswith("{") else text
    token = os.environ.get("VAULT_TOKEN")
    if not token:
        raise OSError("no token for the fast path (AppRole): the full path logs in")
    return token


def consul_services(consul: ConsulAccess | None) -> dict[str, Any]:
    """The agent's registrations (nothing to read when the record expects none)."""
    if consul is None or not consul.expected:
        return {}
    headers = {}
    token = _consul_token(consul)
    if token:
        headers["X-Consul-Token"] = token
    return dict(_get(consul.addr, "/v1/agent/services", headers, consul.ca_cert))


def consul_matches(consul: ConsulAccess | None, states: Mapping[str, NodeState],
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


def _consul_token(consul: ConsulAccess) -> str | None:
    if consul.token_file and Path(consul.token_file).is_file():
        if Path(consul.token_file).stat().st_mode & 0o077:
            raise OSError(f"{consul.token_file} is readable by others")
        return Path(consul.token_file).read_text().strip()
    return os.environ.get(consul.token_env) or None


def expected_registration(payload: Mapping[str, Any], node: str) -> dict[str, Any]:
    """What `consul_matches` compares, from a registration swarm makes (its agent payload)."""
    return {"node": node, "fields": _fields({"Service": payload["Name"], "Address": payload["Address"],
                                             "Port": payload["Port"], "Tags": payload.get("Tags"),
                                             "Meta": payload.get("Meta")})}


def names(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


# --------------------------------------------------------------------------- the command


@dataclass
class DeployRequest:
    """`swarm deploy` as typed: enough to key the fast path without loading the project."""

    root: Path
    inventory: Path
    playbook: Path
    phase_text: str | None
    limit: str | None
    load: Any                          # () -> Project, for the full path
    check: bool = False
    diff: bool = False
    forks: int = 64
    skip_preflight: bool = False
    by: str = ""

    def key(self) -> str:
        args = ["deploy", self.phase_text or "", self.limit or "", str(self.skip_preflight)]
        return inputs_digest(self.root, self.inventory, self.playbook, args)


async def deploy_or_noop(request: DeployRequest, bus: Any, interrupts: Any) -> Any:
    """The fast path when a plan record vouches for it, else (or when it finds a change) the full deploy."""
    from orchestrator.engine.context import RunContext, new_run, whoami

    by = request.by or whoami()
    cache = PlanCache()
    key = None if request.check or _pending_exists() else request.key()
    record = cache.load(key) if key else None
    handover: FastOutcome | None = None
    ctx: RunContext | None = None
    if record is not None:
        ctx = new_run(by, "deploy", record.holder_phases)
        bus.emit("run", "start", message=f"phase {', '.join(map(str, record.phases))} "
                                         f"on {', '.join(record.nodes)} (as planned last time)")
        outcome = await try_noop(record, run_id=ctx.run_id, holder=ctx.holder(), forks=request.forks)
        if outcome.noop:
            return await _finish_noop(record, outcome, bus)
        bus.emit("run", "info", message=f"the last plan does not hold ({outcome.why}): planning anew")
        handover = outcome
    return await _full(request, bus, interrupts, by, cache, key, handover, ctx)


async def _finish_noop(record: PlanRecord, outcome: FastOutcome, bus: Any) -> Any:
    from orchestrator.engine.context import DeployResult

    for name, why in outcome.skipped.items():
        bus.emit("connect", "skipped", host=name, message=f"optional node skipped: {why}")
    for name, state in outcome.states.items():
        bus.emit("facts", "ok", host=name, message=f"current {state.current_id or 'none'}")
    stats = dict(outcome.fleet.stats())
    await outcome.fleet.close()
    bus.emit("run", "unchanged", message="nothing to change: every node runs what is wanted")
    return DeployResult(phases=tuple(record.phases), unchanged=sorted(outcome.states),
                        releases={n: s.current_id or "" for n, s in outcome.states.items()},
                        skipped=dict(outcome.skipped), stats=stats)


async def _full(request: DeployRequest, bus: Any, interrupts: Any, by: str, cache: PlanCache, key: str | None,
                handover: FastOutcome | None, ctx: Any) -> Any:
    from orchestrator.engine.deploy import Options, deploy
    from orchestrator.engine.selection import parse_phases

    try:
        project = request.load()
        options = Options(phases=parse_phases(request.phase_text, project), limit=request.limit,
                          check=request.check or request.diff, diff=request.diff, forks=request.forks,
                          skip_preflight=request.skip_preflight, by=by)
    except BaseException:
        if handover is not None:
            await _release(handover, ctx)
        raise
    return await deploy(project, options, bus, interrupts=interrupts, handover=handover, run_ctx=ctx,
                        plan_cache=cache if key else None, plan_key=key)


async def _release(handover: FastOutcome, ctx: Any) -> None:
    """The full path never started: release the locks the fast look took, close the connections."""
    from orchestrator import commands as cmd

    for name, state in handover.states.items():
        if state.lock.taken and ctx is not None:
            root = handover.roots.get(name, "")
            await handover.fleet[name].run(cmd.unlock_if_mine(root, ctx.run_id), check=False)
    await handover.fleet.close()


def _pending_exists() -> bool:
    from orchestrator.paths import local_state_dir

    return any(local_state_dir().glob("pending-unwind-*.json"))
