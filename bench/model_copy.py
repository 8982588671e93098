"""Copying a model's weights node to node on the lab: swarm's two ways against a plain `cat | ssh`.

Run on a lab that is up and deployed (it holds the lab lock itself unless SWARM_LAB_LOCK_OWNER
is set), as root:

    python bench/model_copy.py --mb 1024 --repeat 3

Each repeat, between starlord (which holds the revision) and thanos (which does not):

- `cat | ssh`: the shards concatenated on starlord, piped into `ssh thanos 'cat > file'` (a key made
  for the bench, removed after): the floor — the bytes cross the link once, encrypted once;
- swarm direct: `Stager` copying the revision starlord -> thanos the direct way (`tar | ssh` over a
  short-lived forced-command key), then hashing every file on thanos and renaming it into place;
- swarm relay: the same through the controller over its two SSH connections (`models.direct: false`).

Also measured: the hub's bytes served during the node-to-node copies (0 expected). The results go
to bench/model-copy-results.json and are printed; nothing is asserted (docs/bench.md, docs/models.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.commands import models as mcmd  # noqa: E402
from orchestrator.config.project import load_project  # noqa: E402
from orchestrator.events import EventBus  # noqa: E402
from orchestrator.lab import api  # noqa: E402
from orchestrator.models.stage import Needs, Stager  # noqa: E402
from orchestrator.render.weights import WeightsPin  # noqa: E402
from orchestrator.transport.fleet import Fleet  # noqa: E402

SRC, DST = "starlord", "thanos"
REPO_ID = "bench/copy-model"


def sh(lab: api.Lab, node: str, script: str, timeout: float = 1800) -> str:
    result = subprocess.run(lab.ssh_argv(node, shlex.join(["sh", "-c", script])), capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{node}: {script[:80]}: {result.stderr}")
    return result.stdout


def inventory(lab: api.Lab, direct: bool) -> Path:
    data = yaml.safe_load(lab.inventory_path.read_text())
    data.setdefault("models", {})["direct"] = direct
    path = lab.paths.root / f"bench-copy-{'direct' if direct else 'relay'}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def stage(lab: api.Lab, pin: WeightsPin, node: str, direct: bool) -> dict[str, Any]:
    project = load_project(REPO, inventory(lab, direct))
    needs = Needs(by_node={node: {pin: ["bench"]}})
    nodes = [project.inventory.node(n) for n in (SRC, DST)]
    async with Fleet.for_nodes(project.inventory, nodes) as fleet:
        await fleet.connect()
        if node == DST:
            await fleet[DST].run(mcmd.remove_dirs([pin.store_dir("/opt/ai-swarm")]))
        started = time.monotonic()
        outcome = await Stager(project, fleet, EventBus()).run(needs)
        seconds = time.monotonic() - started
    if outcome.problems or not outcome.copied:
        raise SystemExit(f"staging failed: {outcome.problems}")
    node_, _, source, size, _ = outcome.copied[0]
    return {"source": source, "bytes": size, "seconds": round(seconds, 3), "mb_s": round(size / seconds / 1e6, 1)}


def plain_copy(lab: api.Lab, pin: WeightsPin) -> dict[str, Any]:
    """`cat shards | ssh thanos 'cat > file'` from starlord, with a key made for it."""
    src_dir = pin.store_dir("/opt/ai-swarm")
    key = "/opt/ai-swarm/.bench-key"
    sh(lab, SRC, f"rm -f {key} {key}.pub && ssh-keygen -q -t ed25519 -N '' -f {key}")
    public = sh(lab, SRC, f"cat {key}.pub").strip()
    sh(lab, DST, f"mkdir -p ~/.ssh && echo {shlex.quote(public + ' bench-copy')} >> ~/.ssh/authorized_keys")
    host = (lab.node_dir(DST) / "ssh_host_ed25519_key.pub").read_text().split()
    sh(lab, SRC, f"echo {shlex.quote(lab.nodes[DST] + ' ' + host[0] + ' ' + host[1])} > {key}.known")
    size = int(sh(lab, SRC, f"cat {src_dir}/*.safetensors | wc -c").strip())
    script = (f"cd {src_dir} && cat *.safetensors | ssh -F /dev/null -i {key} -o IdentitiesOnly=yes "
              f"-o UserKnownHostsFile={key}.known -o BatchMode=yes swarm@{lab.nodes[DST]} "
              "'cat > /opt/ai-swarm/.bench-copy'")
    started = time.monotonic()
    sh(lab, SRC, script)
    seconds = time.monotonic() - started
    sh(lab, DST, "rm -f /opt/ai-swarm/.bench-copy; grep -v bench-copy ~/.ssh/authorized_keys > ~/.ssh/k.tmp; "
                 "mv ~/.ssh/k.tmp ~/.ssh/authorized_keys")
    sh(lab, SRC, f"rm -f {key} {key}.pub {key}.known")
    return {"source": "cat | ssh", "bytes": size, "seconds": round(seconds, 3), "mb_s": round(size / seconds / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    lab = api.Lab.load()
    commit = lab.make_model(REPO_ID, args.mb)
    pin = WeightsPin(REPO_ID, commit)
    asyncio.run(stage(lab, pin, SRC, True))      # the source holds it (from the hub or the mirror)
    runs: dict[str, list[dict[str, Any]]] = {"cat | ssh": [], "direct": [], "relay": []}
    hub_before = lab.hub_stats()["bytes_served"]
    for _ in range(args.repeat):
        runs["cat | ssh"].append(plain_copy(lab, pin))
        runs["direct"].append(asyncio.run(stage(lab, pin, DST, True)))
        runs["relay"].append(asyncio.run(stage(lab, pin, DST, False)))
    hub_bytes = lab.hub_stats()["bytes_served"] - hub_before
    best = {k: max(r["mb_s"] for r in v) for k, v in runs.items()}
    summary = {"measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "mb": args.mb,
               "repeat": args.repeat, "cpus": os.cpu_count(), "hub_bytes_during_copies": hub_bytes,
               "best_mb_s": best, "ratio_to_cat_ssh": {k: round(v / best["cat | ssh"], 3) for k, v in best.items()},
               "runs": runs}
    (REPO / "bench" / "model-copy-results.json").write_text(json.dumps(summary, indent=2) + "\n")
    shown = {k: summary[k] for k in ("mb", "hub_bytes_during_copies", "best_mb_s", "ratio_to_cat_ssh")}
    print(json.dumps(shown, indent=2))  # noqa: T201 - the bench's report


if __name__ == "__main__":
    main()
