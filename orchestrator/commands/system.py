"""Read-only system facts: architecture, free disk, listening ports, GPUs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.commands.base import Command, read_only


def uname_m() -> Command:
    return read_only("uname", "-m")


def df(path: str) -> Command:
    return read_only("df", "-Pk", "--", path)


@dataclass(frozen=True)
class DiskFree:
    total_kib: int
    available_kib: int
    mount: str


def parse_df(stdout: str) -> DiskFree:
    """Last line of `df -Pk`: fs, 1024-blocks, used, available, capacity, mount."""
    fields = stdout.strip().splitlines()[-1].split(None, 5)
    return DiskFree(int(fields[1]), int(fields[3]), fields[5])


def listening_ports() -> Command:
    return read_only("ss", "-ltnH")


def parse_listening_ports(stdout: str) -> set[int]:
    """Ports from `ss -ltnH` local addresses (`0.0.0.0:22`, `[::]:80`, `*:8080`)."""
    ports: set[int] = set()
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rpartition(":")[2].isdigit():
            ports.add(int(fields[3].rpartition(":")[2]))
    return ports


def nvidia_smi_query(fields: Sequence[str]) -> Command:
    return read_only(
        "nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"
    )



def node_clock() -> Command:
    """The node's time in seconds since the epoch (container times are in node time)."""
    return Command(("date", "+%s"), mutates=False, label="node-clock")


MACHINE_FACTS_SCRIPT = """echo "arch $(uname -m)"
echo "cpus $(nproc 2>/dev/null || echo 0)"
awk '/^MemTotal:/ {print "mem_kib", $2}' /proc/meminfo
echo "--- gpus"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,temperature.gpu,driver_version,utilization.gpu --format=csv,noheader,nounits 2>/dev/null || true
fi
"""


def machine_facts() -> Command:
    """What `swarm init --probe` reads of a machine, in one read-only command: architecture,
    cores, RAM, and the GPUs nvidia-smi lists (nothing when there is no driver)."""
    return Command(("sh", "-c", MACHINE_FACTS_SCRIPT), mutates=False, label="machine-facts")
