"""What `swarm init --probe` reads of a machine: architecture, cores, RAM and GPUs.

The command is `commands.system.machine_facts()` (one read-only `sh` script); this is its
parser. The GPU lines are nvidia-smi's own, read by the same parser as every GPU fact.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.facts.gpu import parse_nvidia_smi


@dataclass(frozen=True)
class MachineFacts:
    arch: str
    cpus: int
    ram_gb: float
    gpus: tuple[tuple[int, str, int], ...]   # (index, model, vram_mib)


def parse_machine_facts(stdout: str) -> MachineFacts:
    """The answer of `commands.system.machine_facts()`; its GPU lines are nvidia-smi's."""
    head, _, gpu_text = stdout.partition("--- gpus")
    values = dict(line.split(None, 1) for line in head.splitlines() if len(line.split(None, 1)) == 2)
    readings = parse_nvidia_smi(gpu_text) if gpu_text.strip() else ()
    gpus = tuple((g.index, g.name, g.memory_total_mib) for g in readings if g.memory_total_mib)
    mem_kib = int(values.get("mem_kib", "0").strip() or 0)
    return MachineFacts(arch=values.get("arch", "").strip(), cpus=int(values.get("cpus", "0").strip() or 0),
                        ram_gb=round(mem_kib / 1024 / 1024, 1), gpus=gpus)
