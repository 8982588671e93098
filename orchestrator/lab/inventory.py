"""The lab's inventory: the fleet of inventory/swarm.yml, moved onto lab addresses.

Works on raw YAML data on purpose: the lab must keep every key the fleet inventory has
(services, vars, thermal limits...) without knowing them, and change only what makes it
the lab — addresses, SSH credentials, the registry mirror, Vault/Consul addresses, the
compose subnet, and the few fleet vars that name the fleet's networks or what the lab
cannot run (LAB_VARS). Nodes the lab does not run are dropped, except `optional: true`
ones (overflow): they stay optional, on the lab address they would have, with nothing
listening there — as an optional machine that is switched off.

Any project's inventory works the same way (`swarm lab up --inventory FILE`, or from the
project's directory): the lab takes the shape of its fleet — the non-optional nodes by
name (`node_names`), each node's architecture and GPUs with their VRAM (`apply_facts`),
and Vault/Consul on the node the inventory puts them on (`control_address`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from orchestrator.lab.layout import (
    BRIDGE_ADDRESS,
    COMPOSE_SUBNET,
    LAB_NET,
    REFERENCE_NUMBERS,
    REGISTRY,
    Gpu,
    LabPaths,
    NodeSpec,
    node_address,
)

Raw = dict[str, Any]

# Fleet vars the lab replaces: the tailnet is the lab network; only the controller (the
# host, where `swarm` and the tests run) is on LiteLLM's allowlist, so the other lab
# addresses — the nodes — are turned away with 403 as an outsider would be; and LiteLLM
# runs without its database, since DB-backed keys need Prisma's downloaded engines.
LAB_VARS: Raw = {
    "tailnet_cidr": str(LAB_NET),
    "allowed_ips": [BRIDGE_ADDRESS, "127.0.0.1"],
    "use_database": False,
}


def load_source(path: Path) -> Raw | None:
    """The fleet inventory as raw YAML, or None when there is none."""
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else None


def ssh_block(paths: LabPaths, source: Raw | None = None) -> Raw:
    base = dict((source or {}).get("ssh") or {})
    base.update({"user": "swarm", "port": 22, "key": str(paths.key),
                 "known_hosts": str(paths.known_hosts)})
    base.setdefault("connect_timeout", 10)
    base.setdefault("command_timeout", 120)
    return base


def node_names(source: Raw | None) -> list[str] | None:
    """The lab nodes a fleet inventory asks for: its non-optional nodes, in order (None: no nodes)."""
    nodes = (source or {}).get("nodes") or {}
    names = [str(n) for n, body in nodes.items() if not (body or {}).get("optional")]
    return names or None


def _server_node(source: Raw | None, section: str) -> str | None:
    """The node whose address is the host of the inventory's `vault.addr` / `consul.addr`."""
    addr = str(((source or {}).get(section) or {}).get("addr") or "")
    host = addr.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    for name, body in ((source or {}).get("nodes") or {}).items():
        if host and str((body or {}).get("address")) == host:
            return str(name)
    return None


def control_address(specs: list[NodeSpec], source: Raw | None = None,
                    section: str = "vault") -> str:
    """Where Vault (or Consul) runs: the node the fleet inventory's address names, else
    oracle when it is in the lab, else the first node."""
    by_name = {s.name: s for s in specs}
    named = _server_node(source, section)
    return (by_name.get(named or "") or by_name.get("oracle") or specs[0]).address


def rewrite(source: Raw | None, specs: list[NodeSpec], paths: LabPaths) -> Raw:
    """The lab inventory for full nodes, based on the fleet inventory when there is one."""
    data: Raw = copy.deepcopy(source) if source else {"fleet": "swarm-lab"}
    control = control_address(specs, source, "vault")
    data["ssh"] = ssh_block(paths, source)
    data["registry"] = {"mirror": REGISTRY, "insecure": True}
    # `swarm vault init --key-file <lab>/vault-keys.json` keeps the root token there and writes
    # the deploy token (only the fleet's KV paths) to <lab>/vault-token, which deploys use.
    data["vault"] = dict(data.get("vault") or {}, addr=f"http://{control}:8200",
                         token_file=str(paths.root / "vault-token"))
    data["consul"] = dict(data.get("consul") or {},
                          addr=f"http://{control_address(specs, source, 'consul')}:8500")
    data["network"] = dict(data.get("network") or {"name": "aiswarm"}, subnet=COMPOSE_SUBNET)
    data["vars"] = dict(data.get("vars") or {}, **LAB_VARS)
    source_nodes = data.get("nodes") or {}
    nodes = {s.name: _node(source_nodes, s) for s in specs}
    nodes.update(_switched_off(source_nodes, specs))
    data["nodes"] = nodes
    data["groups"] = _groups(data.get("groups") or {}, list(nodes))
    return data


def _switched_off(source_nodes: Raw, specs: list[NodeSpec]) -> Raw:
    """Optional fleet nodes the lab does not run, kept optional on an idle lab address."""
    used = {s.number for s in specs}
    out = {}
    for name, body in source_nodes.items():
        node = dict(body or {})
        if name in {s.name for s in specs} or not node.get("optional"):
            continue
        number = REFERENCE_NUMBERS.get(name) or max([*used, *REFERENCE_NUMBERS.values()]) + 1
        if number in used:
            number = max([*used, *REFERENCE_NUMBERS.values()]) + 1
        used.add(number)
        node.update(address=node_address(number), ssh={})
        out[name] = node
    return out


def _node(nodes: Raw, spec: NodeSpec) -> Raw:
    node = dict(nodes.get(spec.name) or {})
    node["address"] = spec.address
    node["arch"] = spec.arch
    node["ssh"] = {}
    node["cpus"] = os.cpu_count() or 1  # every lab node shares this machine's cores
    node.pop("optional", None)  # the lab runs it, so it is there
    if spec.gpus and "gpus" not in node:
        node["gpus"] = [{"model": g.name, "vram_mib": g.memory_mib} for g in spec.gpus]
    return node


def _groups(groups: Raw, names: list[str]) -> Raw:
    out = {}
    for group, body in groups.items():
        entry = dict(body or {})
        entry["hosts"] = [h for h in entry.get("hosts") or [] if h in names]
        out[group] = entry
    return out


def light(specs: list[NodeSpec], paths: LabPaths) -> Raw:
    """A minimal inventory of SSH-only nodes (no services, no Vault/Consul servers)."""
    control = control_address(specs)
    return {
        "fleet": "swarm-lab-light",
        "ssh": ssh_block(paths),
        "deploy_root": "/opt/ai-swarm",
        "registry": {"mirror": None, "insecure": False},
        "vault": {"addr": f"http://{control}:8200", "mount": "secret", "path": "ai-swarm"},
        "consul": {"addr": f"http://{control}:8500"},
        "network": {"name": "aiswarm", "subnet": COMPOSE_SUBNET},
        "groups": {"light": {"hosts": [s.name for s in specs]}},
        "nodes": {s.name: {"address": s.address, "arch": s.arch} for s in specs},
    }


def apply_facts(source: Raw | None, specs: list[NodeSpec]) -> list[NodeSpec]:
    """Take arch and GPUs from the fleet inventory, where it names the node."""
    nodes = (source or {}).get("nodes") or {}
    out = []
    for spec in specs:
        node = nodes.get(spec.name) or {}
        arch = str(node["arch"]) if node.get("arch") in ("amd64", "arm64") else spec.arch
        gpus = tuple(Gpu(str(g["model"]), int(g["vram_mib"])) for g in node.get("gpus") or []
                     if isinstance(g, dict) and "model" in g and "vram_mib" in g)
        out.append(NodeSpec(spec.name, spec.number, arch, gpus or spec.gpus, spec.light))
    return out


def write(data: Raw, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by `swarm lab up`: the lab fleet. Regenerated on every `lab up`.\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
