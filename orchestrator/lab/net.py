"""Lab networking: one bridge on the host, one network namespace + veth per node.

The host side is `swarmlab0` (198.18.0.1/16); node n's namespace `lab-<name>` holds
`eth0` with its 198.18.x.y/16 address, loopback, and NO default route — only the
bridge's /16 is reachable, so nothing in a node (nor its containers) can send traffic
outside 198.18.0.0/15 even by mistake. Links are cut with blackhole routes inside the
namespaces, which is how tests stage "thanos cannot reach oracle".
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.lab import proc
from orchestrator.lab.layout import BRIDGE, BRIDGE_ADDRESS, BRIDGE_PREFIX, NETNS_PREFIX, NodeSpec

NETNS_DIR = Path("/var/run/netns")


def netns_path(spec: NodeSpec) -> Path:
    return NETNS_DIR / spec.netns


def lab_namespaces() -> list[str]:
    """Every `lab-*` network namespace on this machine (leftovers included)."""
    result = proc.run(["ip", "-j", "netns", "list"], check=False)
    try:
        entries = json.loads(result.stdout or "[]")
    except ValueError:
        entries = []
    return sorted(e["name"] for e in entries if e.get("name", "").startswith(NETNS_PREFIX))


def has_bridge() -> bool:
    return proc.run(["ip", "link", "show", BRIDGE], check=False).returncode == 0


def ensure_bridge() -> None:
    if not has_bridge():
        proc.run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    disable_ipv6_on_host(BRIDGE)
    proc.run(["ip", "addr", "replace", f"{BRIDGE_ADDRESS}/{BRIDGE_PREFIX}", "dev", BRIDGE])
    proc.run(["ip", "link", "set", BRIDGE, "up"])


def delete_bridge() -> None:
    if has_bridge():
        proc.run(["ip", "link", "del", BRIDGE], check=False)


def lab_veths() -> list[str]:
    """The host ends of lab veths (`vl<N>`) that exist, a torn-down lab's leftovers included."""
    root = Path("/sys/class/net")
    names = [p.name for p in root.iterdir()] if root.is_dir() else []
    return sorted(n for n in names if n.startswith("vl") and n[2:].isdigit())


def delete_veths(names: list[str]) -> None:
    """Delete veth pairs by their host end. A process of an old lab that outlived its
    teardown keeps that namespace, and so its veth, alive; the pair goes with its host end."""
    if names:
        proc.run(["ip", "-force", "-batch", "-"], input_text="".join(f"link del {n}\n" for n in names),
                 check=False)


def add_nodes_batch(specs: list[NodeSpec]) -> None:
    """Same as add_node for many nodes, in two `ip -batch` runs (fast for 50+ nodes)."""
    delete_veths(sorted({s.veth for s in specs} & set(lab_veths())))  # never "File exists"
    host = []
    for spec in specs:
        host.append(f"netns add {spec.netns}")
        host.append(f"link add {spec.veth} type veth peer name eth0 netns {spec.netns}")
        host.append(f"link set {spec.veth} master {BRIDGE} up")
    proc.run(["ip", "-batch", "-"], input_text="\n".join(host) + "\n")
    for spec in specs:
        disable_ipv6_in(spec.netns)
        disable_ipv6_on_host(spec.veth)
        inside = (f"addr add {spec.address}/{BRIDGE_PREFIX} dev eth0\n"
                  "link set eth0 up\nlink set lo up\n")
        proc.run(["ip", "-n", spec.netns, "-batch", "-"], input_text=inside)


def disable_ipv6_in(ns: str) -> None:
    """No IPv6 in a node (no link-local fe80:: addresses): every address stays in the lab."""
    proc.run(["nsenter", f"--net={NETNS_DIR / ns}", "--", "sysctl", "-q", "-w",
              "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])


def disable_ipv6_on_host(link: str) -> None:
    path = Path("/proc/sys/net/ipv6/conf") / link / "disable_ipv6"
    if path.exists():
        path.write_text("1\n")


def delete_namespace(name: str) -> None:
    proc.run(["ip", "netns", "del", name], check=False)


def pids_in(name: str) -> list[int]:
    result = proc.run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def blackhole(ns: str, address: str, present: bool) -> None:
    """Add (or remove) a blackhole route to address inside namespace ns."""
    verb = "replace" if present else "del"
    proc.run(["ip", "-n", ns, "route", verb, "blackhole", f"{address}/32"], check=present)


def cut_link(a: NodeSpec, b: NodeSpec) -> None:
    blackhole(a.netns, b.address, True)
    blackhole(b.netns, a.address, True)


def restore_link(a: NodeSpec, b: NodeSpec) -> None:
    blackhole(a.netns, b.address, False)
    blackhole(b.netns, a.address, False)
