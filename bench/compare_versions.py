"""Two checkouts of swarm on the same no-op, in the same run: is the new code slower?

    python bench/compare_versions.py OLD_TREE NEW_TREE INVENTORY [--rounds 25] [-- DEPLOY ARGS]

Each round runs `swarm deploy ARGS` from the old tree, then the new, then bench/floor.py,
timing each whole process; the rounds alternate so a machine that drifts moves all three
alike. Each version runs from its own tree (its directory first on sys.path, whatever the
editable install points at) and is byte-compiled first, as bench/run.py does. Both versions
must already answer the command as a no-op (run it once each, and `--check` it: a version
that renders the fleet differently would deploy). Reports medians and ratios.

Example (issue 20's check, the one form an older checkout can still read):
    git worktree add --detach /work/wt-old 8e73584
    python bench/compare_versions.py /work/wt-old . ~/.cache/swarm-lab/inventory-old.yml -- --phase 1
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} (in {cwd}) failed: {done.stderr[-400:]}")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("inventory", type=Path)
    ap.add_argument("--rounds", type=int, default=25)
    argv = sys.argv[1:]
    deploy_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    calls = {}
    for name, tree in (("old", args.old.resolve()), ("new", args.new.resolve())):
        compileall.compile_dir(str(tree / "orchestrator"), quiet=2)
        env = {**os.environ, "PYTHONPATH": str(tree)}
        calls[name] = ([sys.executable, "-m", "orchestrator.cli", "-i", str(args.inventory), "deploy", *deploy_args],
                       tree, env)
    calls["floor"] = ([sys.executable, "-W", "ignore", str(BENCH / "floor.py"), str(args.inventory), "--docker"],
                      BENCH, dict(os.environ))
    for argv, cwd, env in calls.values():  # warm the page cache; each version's plan record in place
        timed(argv, cwd, env)
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.rounds):
        for name, (argv, cwd, env) in calls.items():
            samples[name].append(timed(argv, cwd, env))
    med = {k: statistics.median(v) for k, v in samples.items()}
    for name, values in samples.items():
        print(f"{name:6} median {med[name] * 1000:6.0f} ms  min {min(values) * 1000:6.0f} ms")  # noqa: T201
    print(f"new/old {med['new'] / med['old']:.3f}  new/floor {med['new'] / med['floor']:.2f}  "  # noqa: T201
          f"old/floor {med['old'] / med['floor']:.2f}  ({args.rounds} rounds)")


if __name__ == "__main__":
    main()
