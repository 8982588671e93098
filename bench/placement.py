"""Time `swarm plan --place`'s solver on a large home fleet: 10 nodes x 20 instances.

Measured, not asserted (no timing assertions in tests): run `python bench/placement.py`.
The fleet mixes the cards of users' reports (RTX 4090, 3090, 3080, 3060, 4060 Ti 16 GB);
the wants mix the catalogue's models at 4K-32K context.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from orchestrator.config.project import load_project
from orchestrator.render import placement as solver
from orchestrator.render.placement import Slot, Want, Wants, place
from orchestrator.render.plan import load_catalog
from orchestrator.render.vllm_memory import Card, parse_version

REPO = Path(__file__).resolve().parents[1]
CARDS = [("NVIDIA GeForce RTX 4090", 24564), ("NVIDIA GeForce RTX 3090", 24576),
         ("NVIDIA GeForce RTX 3080", 10240), ("NVIDIA GeForce RTX 3060", 12288),
         ("NVIDIA GeForce RTX 4060 Ti", 16380)]
MODELS = ["TheBloke/Mistral-7B-Instruct-v0.2-GPTQ", "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
          "casperhansen/mistral-nemo-instruct-2407-awq", "microsoft/Phi-3-mini-4k-instruct",
          "Qwen/Qwen2.5-14B-Instruct-AWQ"]


def fleet() -> list[Slot]:
    return [Slot(f"node{n}", i, Card(*CARDS[(n + i) % len(CARDS)], in_use_mib=0))
            for n in range(10) for i in range(2)]


def wants() -> Wants:
    return Wants(serve={f"svc{i}": Want(model=MODELS[i % len(MODELS)], context=[4096, 8192, 16384][i % 3],
                                        concurrency=1 + i % 4, kv_cache_dtype="fp8") for i in range(20)})


def main() -> None:
    models = load_catalog(load_project(REPO)).models
    ws = wants()
    archs = {name: models[w.model].arch() for name, w in ws.serve.items()}
    runs = []
    for _ in range(5):
        solver._SHARES.clear()           # a cold solve each time: no share remembered
        start = time.perf_counter()
        result = place(ws, archs, fleet(), parse_version("v0.6.3"))
        runs.append(time.perf_counter() - start)
    sys.stdout.write(f"10 nodes x 20 instances: placed {len(result.choices)}, unplaced {len(result.unplaced)}, "
                     f"capacity {result.capacity:,} tokens (even split {result.baseline_capacity:,}, leaving "
                     f"{result.baseline_unplaced} unserved); "
                     f"solve median {statistics.median(runs):.3f} s, worst {max(runs):.3f} s\n")


if __name__ == "__main__":
    main()
