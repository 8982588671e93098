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


@dataclass(frozen=True)
class MachineFacts:
    arch: str
    cpus: int
    ram_gb: float
    gpus: tuple[tuple[int, str, int], ...]   # (index, model, vram_mib)


def parse_machine_facts(stdout: str) -> MachineFacts:
    """The answer of `machine_facts()`; GPU lines are nvidia-smi's (facts/gpu.py parses them)."""
    from orchestrator.facts.gpu import parse_nvidia_smi

    head, _, gpu_text = stdout.partition("--- gpus")
    values = dict(line.split(None, 1) for line in head.splitlines() if len(line.split(None, 1)) == 2)
    readings = parse_nvidia_smi(gpu_text) if gpu_text.strip() else ()
    gpus = tuple((g.index, g.name, g.memory_total_mib) for g in readings if g.memory_total_mib)
    mem_kib = int(values.get("mem_kib", "0").strip() or 0)
    return MachineFacts(arch=values.get("arch", "").strip(), cpus=int(values.get("cpus", "0").strip() or 0),
                        ram_gb=round(mem_kib / 1024 / 1024, 1), gpus=gpus)
