"""`swarm plan` and `swarm render --out DIR` on a generated fleet of N nodes (default 100): how long
the rendering and the real tools' checks of every node's compose project take (issue 23: one
`docker compose config` per node made 100 nodes take 7-12 s).

    python bench/plan_scale.py [--nodes 100] [--repeat 3]

Writes a throw-away project (inventory of N amd64 nodes on lab addresses, a playbook with Vault,
Consul and HAProxy on the first node and a Redis on every node, the repository's roles through
the shared search path) and times each command as the operator runs it (`python -m
orchestrator.cli`, a fresh process each time). No node is contacted. Prints one line per run
and the median; nothing is asserted (docs/bench.md keeps the figures).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def inventory(n: int) -> dict:
    names = [f"node-{i:03d}" for i in range(1, n + 1)]
    return {
        "fleet": "plan-scale",
        "ssh": {"user": "swarm", "port": 22, "key": "~/.ssh/id_ed25519", "known_hosts": "~/.ssh/known_hosts"},
        "deploy_root": "/opt/ai-swarm",
        "vault": {"addr": "http://198.18.1.1:8200", "mount": "secret", "path": "ai-swarm"},
        "consul": {"addr": "http://198.18.1.1:8500"},
        "network": {"name": "aiswarm", "subnet": "198.19.200.0/24"},
        "nodes": {name: {"address": f"198.18.{1 + i // 250}.{1 + i % 250}", "arch": "amd64", "ram_gb": 16,
                         "cpus": 8} for i, name in enumerate(names)},
    }


def playbook(n: int) -> dict:
    first = "node-001"
    return {
        "name": "plan-scale",
        "secrets": {"redis_password": {"path": "redis", "key": "password"}},
        "phases": [
            {"id": 1, "name": "infrastructure", "kind": "infrastructure", "hosts": "all",
             "infrastructure": {"network": True, "directories": ["releases"]},
             "services": [{"name": "vault", "role": "vault", "host": first},
                          {"name": "consul", "role": "consul", "host": first}]},
            {"id": 2, "name": "caches", "hosts": "all",
             "services": [{"name": "haproxy", "role": "haproxy", "host": first, "vars": {"allowed_ips": []}},
                          *({"name": f"redis-{i:03d}", "role": "redis", "host": f"node-{i:03d}"}
                            for i in range(1, n + 1))]},
        ],
    }


def write_project(root: Path, n: int) -> None:
    (root / "inventory").mkdir(parents=True)
    (root / "playbooks").mkdir()
    (root / "roles").mkdir()
    (root / "inventory/swarm.yml").write_text(yaml.safe_dump(inventory(n), sort_keys=False))
    (root / "playbooks/plan-scale.yml").write_text(yaml.safe_dump(playbook(n), sort_keys=False))


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarm-plan-scale-") as tmp:
        root = Path(tmp)
        write_project(root, args.nodes)
        swarm = [sys.executable, "-m", "orchestrator.cli", "--project", str(root)]
        for name, argv in (("plan", [*swarm, "plan"]), ("render --out DIR", [*swarm, "render", "--out", str(root / "out")])):
            runs = [timed(argv, REPO) for _ in range(args.repeat)]
            print(f"{args.nodes} nodes, swarm {name}: " + ", ".join(f"{t:.2f}" for t in runs)  # noqa: T201
                  + f" s; median {statistics.median(runs):.2f} s")


if __name__ == "__main__":
    main()
