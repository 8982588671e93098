"""Tearing a lab down, including what an earlier, crashed or foreign lab left behind.

Network namespaces and links outlive the processes that made them, so `down` works from
what the machine shows, not only from the lab's own records: every `lab-*` namespace (and
the processes in it), the nodes' container cgroups, lab daemons whose command line names
the lab directory, a registry serving the lab address, and the bridge. Each engine first
gets SIGTERM (it stops its containers within its 2 s shutdown timeout); every wait is
bounded and ends in SIGKILL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from orchestrator.lab import hub, net, proc, registry
from orchestrator.lab.layout import REGISTRY, LabPaths

CGROUP_ROOT = Path("/sys/fs/cgroup")


def down(paths: LabPaths, say: Callable[[str], None], keep_data: bool = False) -> None:
    """Remove every trace of a lab: processes, containers, namespaces, bridge, registry."""
    nodes_dir = paths.root / "nodes"
    node_dirs = sorted(p for p in nodes_dir.iterdir() if p.is_dir()) if nodes_dir.is_dir() else []
    _stop_dockerds(node_dirs)
    namespaces = net.lab_namespaces()
    for ns in namespaces:
        proc.terminate(net.pids_in(ns), timeout=3.0)
    _kill_cgroups([d.name for d in node_dirs] + [ns.removeprefix("lab-") for ns in namespaces])
    proc.terminate(_stray_pids(paths.root) + _lab_registries(), timeout=3.0)
    for ns in namespaces:
        net.delete_namespace(ns)
    net.delete_veths(net.lab_veths())
    net.delete_bridge()
    registry.stop(paths)
    hub.stop(paths)
    if not keep_data:
        for node_dir in node_dirs:
            _remove_tree(node_dir / "docker")
        paths.state.unlink(missing_ok=True)
    say(f"lab down: removed {len(namespaces)} namespace(s)")


def _stop_dockerds(node_dirs: list[Path]) -> None:
    """SIGTERM every node engine at once (they stop their containers), bounded wait."""
    pids = []
    for node_dir in node_dirs:
        pid = proc.read_pid(node_dir / "dockerd.pid")
        if pid and proc.is_alive(pid) and proc.comm(pid) == "dockerd":
            pids.append(pid)
    proc.terminate(pids, timeout=10.0)


def _kill_cgroups(names: list[str]) -> None:
    """Kill container processes left in the nodes' cgroups, then remove the cgroups."""
    for name in sorted(set(names)):
        groups = sorted(CGROUP_ROOT.glob(f"*/lab-{name}"))
        pids: set[int] = set()
        for group in groups:
            for procs in group.rglob("cgroup.procs"):
                pids.update(_read_pids(procs))
        proc.terminate(sorted(pids), timeout=3.0)
        for group in groups:
            for sub in sorted(group.rglob("*"), reverse=True):
                if sub.is_dir():
                    _rmdir(sub)
            _rmdir(group)


def _read_pids(procs: Path) -> list[int]:
    try:
        return [int(p) for p in procs.read_text().split()]
    except (OSError, ValueError):
        return []


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


_LAB_PROGRAMS = frozenset({"sshd", "dockerd", "containerd", "docker-registry", "unshare",
                           "nsenter", "sh"})


def _stray_pids(root: Path) -> list[int]:
    """Lab daemons (sshd, dockerd, registry, node init) whose command line names this lab."""
    markers = (f"{root}/nodes/".encode(), f"{root}/registry.yml".encode())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.comm(int(entry.name)) in _LAB_PROGRAMS and any(m in cmdline for m in markers):
            found.append(int(entry.name))
    return found


def _lab_registries() -> list[int]:
    """docker-registry processes serving the lab address (from any lab directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or proc.comm(int(entry.name)) != "docker-registry":
            continue
        try:
            config = Path((entry / "cmdline").read_bytes().split(b"\0")[2].decode())
            serves_lab = REGISTRY in config.read_text()
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        if serves_lab:
            found.append(int(entry.name))
    return found


def _remove_tree(path: Path) -> None:
    if path.exists():
        proc.run(["rm", "-rf", "--one-file-system", str(path)], check=False, timeout=120)
