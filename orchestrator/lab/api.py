"""The lab as a Python API: `up(...) -> Lab`, `Lab.load()`, `down()`, `status()`.

`up` is idempotent: it first removes whatever an earlier lab left (namespaces, veths,
the bridge, node processes, container cgroups, the registry), then builds the fleet:
host prerequisites -> bridge -> nodes (netns + init) while images are built and pushed
in a background thread -> wait for every sshd (and dockerd) -> known_hosts -> inventory.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError, RuntimeFailure
from orchestrator.lab import gpu, host, images, net, node, proc, registry, teardown
from orchestrator.lab import hub as lab_hub
from orchestrator.lab import inventory as lab_inventory
from orchestrator.lab.layout import REGISTRY, Gpu, LabPaths, NodeSpec, parse_nodes_option

log = logging.getLogger(__name__)
Say = Callable[[str], None]
REPO_INVENTORY = Path(__file__).resolve().parents[2] / "inventory" / "swarm.yml"


def fleet_inventory() -> Path:
    """`./inventory/swarm.yml` when there is one, else the repository's."""
    local = Path.cwd() / "inventory" / "swarm.yml"
    return local if local.is_file() else REPO_INVENTORY


FLEET_INVENTORY = REPO_INVENTORY


def _log_say(message: str) -> None:
    log.info("%s", message)


@dataclass
class Lab:
    """A running lab: where its files are and how to reach, stage and stop its nodes."""

    paths: LabPaths
    specs: list[NodeSpec]
    light: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def inventory_path(self) -> Path:
        return self.paths.inventory

    @property
    def key_path(self) -> Path:
        return self.paths.key

    @property
    def known_hosts_path(self) -> Path:
        return self.paths.known_hosts

    @property
    def registry(self) -> str:
        return REGISTRY

    @property
    def nodes(self) -> dict[str, str]:
        """Node name -> lab address."""
        return {s.name: s.address for s in self.specs}

    def spec(self, name: str) -> NodeSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise InputError(f"lab has no node {name!r}", hint=f"nodes: {', '.join(self.nodes)}")

    def node_dir(self, name: str) -> Path:
        return self.paths.node(self.spec(name).name)

    def docker_socket(self, name: str) -> Path:
        """The node's engine socket, reachable from the host."""
        return self.node_dir(name) / "docker.sock"

    def docker_client(self, name: str) -> Any:
        import docker  # the docker SDK: 170-300 ms to import here (python -X importtime), for lab staging only

        return docker.DockerClient(base_url=f"unix://{self.docker_socket(name)}", timeout=60)

    def exec_on(self, name: str, argv: Sequence[str], *, check: bool = True,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run argv as root inside the node's namespaces (test staging, not deploys)."""
        return proc.run(node.exec_argv(self.node_dir(name), list(argv)), check=check,
                        timeout=timeout)

    def ssh_argv(self, name: str, *command: str) -> list[str]:
        """`ssh` argv that logs into the node as the lab user with the lab key."""
        return ["ssh", "-i", str(self.key_path), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_path}",
                "-o", "ConnectTimeout=10", f"{node.LAB_USER}@{self.spec(name).address}",
                *command]

    def gpu_state_path(self, name: str) -> Path:
        return node.gpu_state_path(self.node_dir(name))

    def set_gpu(self, name: str, index: int = 0, **fields: Any) -> None:
        """Change what the node's nvidia-smi reports (e.g. temperature=90)."""
        path = self.gpu_state_path(name)
        if not path.exists():
            raise InputError(f"lab node {name} has no GPU")
        state = json.loads(path.read_text())
        gpu.write_state(path, gpu.update_state(state, index, fields))

    def hub_stats(self) -> dict[str, Any]:
        """What the lab's hub stand-in served so far (requests, bytes, per file)."""
        return lab_hub.stats()

    def make_model(self, repo: str, megabytes: float) -> str:
        """Publish (or re-publish) a synthetic repository of that size on the lab's hub; its commit."""
        return lab_hub.make_repos(self.paths, [repo], megabytes)[repo]

    def cut_link(self, a: str, b: str) -> None:
        """Make a and b unreachable from each other (both directions)."""
        net.cut_link(self.spec(a), self.spec(b))

    def restore_link(self, a: str, b: str) -> None:
        net.restore_link(self.spec(a), self.spec(b))

    def down(self) -> None:
        down(self.paths)

    def save(self) -> None:
        payload = {"light": self.light, "nodes": [
            {"name": s.name, "number": s.number, "arch": s.arch, "light": s.light,
             "gpus": [{"name": g.name, "memory_mib": g.memory_mib} for g in s.gpus]}
            for s in self.specs]}
        self.paths.state.write_text(json.dumps(payload, indent=2))

    @classmethod
    def load(cls, root: Path | None = None) -> Lab:
        """The lab described by `<root>/lab.json` (written by `up`)."""
        paths = LabPaths(root) if root else LabPaths()
        try:
            payload = json.loads(paths.state.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"no lab at {paths.root}", hint="run `swarm lab up`") from exc
        specs = [NodeSpec(n["name"], n["number"], n["arch"],
                          tuple(lab_gpu(g) for g in n.get("gpus", [])), n["light"])
                 for n in payload["nodes"]]
        return cls(paths, specs, payload.get("light", False))


def lab_gpu(raw: dict[str, Any]) -> Gpu:
    return Gpu(raw["name"], int(raw["memory_mib"]))


# --- up ----------------------------------------------------------------------------------

def up(nodes: str | Sequence[str] | None = None, light: bool = False, *,
       root: Path | None = None, source_inventory: Path | None | bool = True,
       say: Say = _log_say) -> Lab:
    """Bring up a fresh lab (removing any earlier one) and return it.

    `nodes`: names (`["oracle", "starlord"]` or `"oracle,starlord"`) or a count (`"50"`,
    `50`); a count gives light-NN nodes. `light`: sshd only, no dockerd, no registry.
    `source_inventory`: the fleet inventory to move onto the lab (True: `fleet_inventory()`,
    None/False: none, a minimal inventory is written). Without `nodes`, the lab has the
    source's non-optional nodes (the reference fleet: oracle, starlord, thanos); name an
    optional node in `nodes` to run it too (`oracle,starlord,thanos,overflow`).
    """
    if source_inventory is True:
        source_inventory = fleet_inventory()
    paths = LabPaths(root) if root else LabPaths()
    reason = host.check_can_run()
    if reason:
        raise RuntimeFailure(f"cannot run the lab here: {reason}")
    option = ",".join(nodes) if isinstance(nodes, (list, tuple)) else (
        str(nodes) if nodes is not None else None)
    source = (lab_inventory.load_source(source_inventory)
              if isinstance(source_inventory, Path) else None)
    if option is None and not light:  # the shape of the fleet: its non-optional nodes
        names = lab_inventory.node_names(source)
        option = ",".join(names) if names else None
    specs = parse_nodes_option(option, light)
    _check_socket_paths(paths, specs)
    if not light:
        specs = lab_inventory.apply_facts(source, specs)
    lab = Lab(paths, specs, light)
    clock = _Clock(lab.timings)
    with clock("host"):
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.root.chmod(0o700)
        uid, gid = host.ensure_host(light, say)
        pubkey = host.ensure_key(paths.key)
    with clock("cleanup"):
        down(paths, say=lambda _m: None)
        # A fresh lab has a fresh, uninitialised Vault: its old keys belong to nobody now.
        (paths.root / "vault-keys.json").unlink(missing_ok=True)
        (paths.root / "vault-token").unlink(missing_ok=True)
        # ...and its nodes run nothing: an unfinished unwind recorded against the old lab is moot.
        for record in (paths.root / "state").glob("pending-unwind-*.json"):
            record.unlink(missing_ok=True)
        # ...and its protected services are new containers, not ones a deploy recreated.
        (paths.root / "state" / "verify-protected.json").unlink(missing_ok=True)
    try:
        _build(lab, source, uid, gid, pubkey, say, clock)
    except BaseException:
        say("lab up failed; removing what was started (logs kept under "
            f"{paths.logs} and {paths.root / 'nodes'})")
        down(paths, say=lambda _m: None, keep_data=True)
        raise
    return lab


def _check_socket_paths(paths: LabPaths, specs: list[NodeSpec]) -> None:
    """Unix socket paths are limited to 107 bytes; the node engines' sockets live in root."""
    longest = max(len(str(paths.node(s.name) / "docker.sock").encode()) for s in specs)
    if longest > 100:
        raise InputError(f"lab directory {paths.root} is too long for unix sockets",
                         hint="set SWARM_LAB_DIR (or --root) to a shorter path")


def _build(lab: Lab, source: lab_inventory.Raw | None, uid: int, gid: int, pubkey: str,
           say: Say, clock: _Clock) -> None:
    paths, specs = lab.paths, lab.specs
    paths.logs.mkdir(parents=True, exist_ok=True)
    lab.save()
    with clock("network"):
        net.ensure_bridge()
        net.add_nodes_batch(specs)
    pusher = None if lab.light else _ImagesThread(paths, say)
    if pusher:
        pusher.start()
    commits: dict[str, str] = {}
    if not lab.light:
        with clock("hub"):
            commits = lab_hub.make_repos(paths, lab_hub.served_models(source))
            lab_hub.start(paths)
    with clock("nodes"):
        for spec in specs:
            node.prepare(spec, paths.node(spec.name), uid, gid, pubkey)
            node.start(spec, paths.node(spec.name))
        say(f"started {len(specs)} node(s); waiting for sshd" +
            ("" if lab.light else " and dockerd"))
        _wait_nodes(lab)
    if pusher:
        with clock("images"):
            pusher.join_or_raise()
    with clock("inventory"):
        _write_known_hosts(lab)
        data = (lab_inventory.light(specs, paths) if lab.light
                else lab_inventory.rewrite(source, specs, paths))
        if not lab.light:  # weights come from the lab's hub, each vLLM instance pinned to its commit
            data["models"] = dict(data.get("models") or {}, hub=lab_hub.HUB_URL,
                                  mirror=str(paths.root / "models-mirror"))
            lab_hub.pin_services(data, commits)
        lab_inventory.write(data, paths.inventory)


class _Clock:
    """Records how long each step of `up` took (Lab.timings)."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.name = ""
        self.start = 0.0

    def __call__(self, name: str) -> _Clock:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = round(time.monotonic() - self.start, 2)


class _ImagesThread(threading.Thread):
    """Starts the registry, builds the lab images and pushes them, in the background."""

    def __init__(self, paths: LabPaths, say: Say) -> None:
        super().__init__(name="lab-images", daemon=True)
        self.paths = paths
        self.say = say
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            registry.start(self.paths)
            push_images(self.paths, self.say)
        except BaseException as exc:  # reported by join_or_raise
            self.error = exc

    def join_or_raise(self, timeout: float = 600.0) -> None:
        self.join(timeout)
        if self.is_alive():
            raise RuntimeFailure(f"lab images not pushed after {timeout:g}s")
        if self.error is not None:
            raise self.error


def push_images(paths: LabPaths, say: Say = _log_say) -> list[str]:
    """Build (cached) and push every catalog image; returns the repo paths pushed."""
    cache = images.LayerCache(paths.cache)
    builder, pusher = images.Builder(cache, say), registry.Pusher(cache)
    ready, skipped = images.buildable(images.catalog())
    for spec in skipped:
        say(f"skipping {spec.ref}: stand-in {spec.needs_standin}.py not written yet")
    pushed = [spec.repo_path for spec in ready if pusher.push(builder.build(spec))]
    say(f"registry {REGISTRY}: {len(ready)} image(s) ready, {len(pushed)} pushed now")
    return pushed


def _tcp_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _docker_up(sock: Path) -> bool:
    if not sock.exists():
        return False
    result = subprocess.run(["docker", "-H", f"unix://{sock}", "version", "--format",
                             "{{.Server.Version}}"], capture_output=True, text=True,
                            check=False, env=proc.clean_env(), timeout=20)
    return result.returncode == 0


def _wait_nodes(lab: Lab, timeout: float = 90.0) -> None:
    pending = {s.name for s in lab.specs}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for spec in [s for s in lab.specs if s.name in pending]:
            sock = lab.paths.node(spec.name) / "docker.sock"
            if _tcp_open(spec.address, 22) and (spec.light or _docker_up(sock)):
                pending.discard(spec.name)
        if pending:
            time.sleep(0.2)
    if pending:
        logs = lab.paths.node(sorted(pending)[0]) / "logs"
        raise RuntimeFailure(f"lab nodes not ready after {timeout:g}s: {', '.join(sorted(pending))}",
                             hint=f"see {logs}/node.log and dockerd.log")


def _write_known_hosts(lab: Lab) -> None:
    lines = []
    for spec in lab.specs:
        key = (lab.paths.node(spec.name) / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{spec.address} {key[0]} {key[1]}")
    lab.paths.known_hosts.write_text("\n".join(lines) + "\n")


def down(paths: LabPaths | None = None, say: Say = _log_say, keep_data: bool = False) -> None:
    """Remove every trace of a lab: processes, containers, namespaces, bridge, registry."""
    teardown.down(paths or LabPaths(), say, keep_data)


# --- status ------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    netns: bool
    sshd: bool
    dockerd: bool | None


def status(root: Path | None = None) -> tuple[Lab, list[NodeStatus], bool]:
    """(lab, per-node status, registry answering)."""
    lab = Lab.load(root)
    namespaces = set(net.lab_namespaces())
    out = []
    for spec in lab.specs:
        sock = lab.paths.node(spec.name) / "docker.sock"
        out.append(NodeStatus(spec.name, spec.address, spec.netns in namespaces,
                              spec.netns in namespaces and _tcp_open(spec.address, 22),
                              None if spec.light else _docker_up(sock)))
    return lab, out, (not lab.light) and registry.ping()
