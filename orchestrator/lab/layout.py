"""Where the lab lives: node specs, address plan and the state directory layout.

Address plan (all inside 198.18.0.0/15, the range reserved for network tests):

- bridge `swarmlab0` = 198.18.0.1/16 on the host; the lab registry listens there.
- node number n (1-based) = 198.18.(1 + (n-1)//254).(1 + (n-1)%254): 198.18.1.1, .1.2, ...
- node n's Docker engine (n <= 32): `--bip 198.19.n.1/24` and the address pool
  198.19.(64+4(n-1)).0/22 cut into /26 networks (16 networks of 62 containers), so every
  Docker network stays inside 198.19.0.0/16.
- 198.19.200.0/24 is left for the inventory's compose network (explicit subnet; each
  node has its own engine so the same subnet on every node does not clash).

The reference fleet keeps fixed numbers (oracle 1, starlord 2, thanos 3, overflow 4), so
addresses stay the same whatever subset is brought up.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import InputError

LAB_NET = ipaddress.ip_network("198.18.0.0/15")
BRIDGE = "swarmlab0"
BRIDGE_ADDRESS = "198.18.0.1"
BRIDGE_PREFIX = 16
REGISTRY_PORT = 5000
REGISTRY = f"{BRIDGE_ADDRESS}:{REGISTRY_PORT}"
COMPOSE_SUBNET = "198.19.200.0/24"
NETNS_PREFIX = "lab-"
MAX_FULL_NODE_NUMBER = 32
MAX_NODES = 254 * 50

REFERENCE_NUMBERS = {"oracle": 1, "starlord": 2, "thanos": 3, "overflow": 4}
DEFAULT_NODES = ("oracle", "starlord", "thanos")


@dataclass(frozen=True)
class Gpu:
    """A GPU the node's nvidia-smi stand-in reports."""

    name: str
    memory_mib: int


REFERENCE_GPUS = {
    "starlord": Gpu("NVIDIA GeForce RTX 4090", 24564),
    "thanos": Gpu("NVIDIA GeForce RTX 3080", 10240),
}
REFERENCE_ARCH = {"oracle": "arm64"}


@dataclass(frozen=True)
class NodeSpec:
    """One lab node: name, number (drives addresses), arch, GPUs, light (sshd only)."""

    name: str
    number: int
    arch: str = "amd64"
    gpus: tuple[Gpu, ...] = ()
    light: bool = False

    @property
    def address(self) -> str:
        return node_address(self.number)

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def veth(self) -> str:
        return f"vl{self.number}"

    @property
    def docker_bip(self) -> str:
        return f"198.19.{self.number}.1/24"

    @property
    def docker_pool(self) -> str:
        return f"base=198.19.{64 + 4 * (self.number - 1)}.0/22,size=26"

    @property
    def platform(self) -> str:
        return f"linux/{self.arch}"


def node_address(number: int) -> str:
    """Lab address of node `number` (1-based); never .0 or .255."""
    if not 1 <= number <= MAX_NODES:
        raise InputError(f"lab node number {number} out of range 1..{MAX_NODES}")
    high, low = divmod(number - 1, 254)
    return f"198.18.{1 + high}.{1 + low}"


def is_lab_address(address: str) -> bool:
    """True for addresses the lab may create or target: 198.18.0.0/15 or loopback."""
    ip = ipaddress.ip_address(address.split("/")[0])
    return ip in LAB_NET or ip.is_loopback


def named_specs(names: list[str], light: bool = False) -> list[NodeSpec]:
    """Specs for named nodes; reference names keep their numbers, others follow."""
    _check_names(names)
    used = {REFERENCE_NUMBERS[n] for n in names if n in REFERENCE_NUMBERS}
    next_free = max([*REFERENCE_NUMBERS.values(), 0]) + 1
    specs = []
    for name in names:
        number = REFERENCE_NUMBERS.get(name)
        if number is None:
            while next_free in used:
                next_free += 1
            number, next_free = next_free, next_free + 1
        specs.append(_spec(name, number, light))
    _check_full_numbers(specs)
    return specs


def light_specs(count: int) -> list[NodeSpec]:
    """`count` SSH-only nodes light-01, light-02, ... (amd64, no services)."""
    if not 1 <= count <= MAX_NODES:
        raise InputError(f"--nodes {count}: expected 1..{MAX_NODES} nodes")
    width = max(2, len(str(count)))
    return [NodeSpec(f"light-{i:0{width}d}", i, light=True) for i in range(1, count + 1)]


def parse_nodes_option(value: str | None, light: bool) -> list[NodeSpec]:
    """`--nodes oracle,starlord` or `--nodes 50` (a count makes light-NN nodes)."""
    text = (value or ",".join(DEFAULT_NODES)).strip()
    if text.isdigit():
        specs = light_specs(int(text))
        return specs if light else [_full(s) for s in specs]
    names = [part.strip() for part in text.split(",") if part.strip()]
    return named_specs(names, light)


def _full(spec: NodeSpec) -> NodeSpec:
    _check_full_numbers([NodeSpec(spec.name, spec.number)])
    return NodeSpec(spec.name, spec.number)


def _spec(name: str, number: int, light: bool) -> NodeSpec:
    gpus = (REFERENCE_GPUS[name],) if name in REFERENCE_GPUS else ()
    return NodeSpec(name, number, REFERENCE_ARCH.get(name, "amd64"), gpus, light)


def _check_names(names: list[str]) -> None:
    if not names:
        raise InputError("--nodes: no node names given")
    for name in names:
        if not name.replace("-", "").isalnum() or not name.isascii() or len(name) > 12:
            raise InputError(f"--nodes: bad node name {name!r}",
                             hint="use letters, digits and '-', at most 12 characters")
    if len(set(names)) != len(names):
        raise InputError("--nodes: a node name is repeated")


def _check_full_numbers(specs: list[NodeSpec]) -> None:
    for spec in specs:
        if not spec.light and spec.number > MAX_FULL_NODE_NUMBER:
            raise InputError(f"node {spec.name}: at most {MAX_FULL_NODE_NUMBER} nodes with "
                             "a Docker engine", hint="use --light for large fleets")


def default_root() -> Path:
    """`$SWARM_LAB_DIR`, else `~/.cache/swarm-lab`."""
    env = os.environ.get("SWARM_LAB_DIR")
    return Path(env) if env else Path.home() / ".cache" / "swarm-lab"


@dataclass(frozen=True)
class LabPaths:
    """Files of one lab under its state directory."""

    root: Path = field(default_factory=default_root)

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yml"

    @property
    def state(self) -> Path:
        return self.root / "lab.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def registry_root(self) -> Path:
        return self.root / "registry"

    def node(self, name: str) -> Path:
        return self.root / "nodes" / name
