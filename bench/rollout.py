"""What clients of the fleet see while models change: an open-loop load of streaming chat
completions through the front door while `swarm deploy` changes every vLLM instance.

    python bench/rollout.py --strategy rolling            # image of all three vLLM instances
    python bench/rollout.py --strategy recreate           # the same change, recreated in place
    python bench/rollout.py --scenario broken             # a broken image on a group's 2nd instance
    python bench/rollout.py --scenario haproxy            # a config change of the front door itself

The load: requests arrive at `--rate` a second (exponential gaps: an open loop, a slow fleet
does not slow the load down), each a streaming chat completion with a unique prompt (no
cache can answer it) and max_tokens spread uniformly over 64-512, for every model the fleet
serves in turn, sent to the front door (`/pool/v1`, routed by the body's model; or LiteLLM's
`/v1` with `--via litellm`). Each stream is judged: `ok` (HTTP 200, every token asked for,
a finish reason, `[DONE]`), `truncated` (200, then cut short), `failed` (no 200, or no
stream at all: refused, reset, 5xx, timeout); its time to first token is kept. Results are
split by when each request started: before the deploy, during it, after it.

Before the measured deploy one unmeasured deploy puts the fleet in the bench's shape (each
instance's rollout strategy, the stand-in's token rate and loading time, the images to
change from): what the measured deploy then changes is the image (or, `haproxy`, one value
of HAProxy's config) and nothing else. Load goes only to the lab (198.18.0.0/15), bounded
by `--max-in-flight` and the run's duration. Results go to bench/results.json
(`rollout-<scenario>-<strategy>`) and are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from orchestrator.lab.load import Load, in_lab, window

REPO = Path(__file__).resolve().parents[1]
VLLMS = {"vllm-primary": "starlord", "vllm-secondary": "starlord", "vllm-backup": "thanos"}
IMAGES = ("v0.6.3", "v0.6.3.post1")
BROKEN = "v0.6.3-broken"


# ---------------------------------------------------------------- the fleet's shape


def inventory_variant(source: Path, target: Path, *, strategy: str, image: dict[str, str],
                      same_model: bool, token_rate: int, load_s: float, rate_limit: int | None) -> None:
    data = yaml.safe_load(source.read_text())
    data.setdefault("vars", {})
    for svc, node in VLLMS.items():
        table = data["nodes"][node].setdefault("services", {}).setdefault(svc, {})
        table.update({"rollout": strategy, "image_tag": image[svc], "healthy_deadline": "90s",
                      "extra_env": {"SWARM_VLLM_TOKEN_RATE": str(token_rate), "SWARM_VLLM_LOAD_S": str(load_s)}})
    if same_model:  # a group of two in one phase: vllm-primary serves the secondary's model (and revision)
        secondary = data["nodes"]["starlord"]["services"]["vllm-secondary"]
        data["nodes"]["starlord"]["services"]["vllm-primary"].update(
            {k: secondary[k] for k in ("model", "quantization", "max_model_len", "revision") if k in secondary})
    haproxy = data["nodes"]["oracle"].setdefault("services", {}).setdefault("haproxy", {})
    # the bench is one client: the front door's per-client limits would count its load as abuse
    haproxy.update({"rate_limit_per_10s": rate_limit or 100000, "pool_rate_limit_per_10s": 100000})
    target.write_text(yaml.safe_dump(data, sort_keys=False))


def swarm(inventory: Path, *args: str, timeout: float = 1800) -> tuple[int, float, str]:
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--project", str(REPO), "-i", str(inventory),
                          *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return run.returncode, time.monotonic() - started, run.stdout + run.stderr


def front_door(inventory: Path) -> str:
    data = yaml.safe_load(inventory.read_text())
    address = str(data["nodes"]["oracle"]["address"])
    if not in_lab(address):
        raise SystemExit(f"refusing to load {address}: the bench loads only the lab (198.18.0.0/15)")
    return address


def secret(name: str) -> str:
    for line in (REPO / "examples/lab-secrets.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise SystemExit(f"no {name} in examples/lab-secrets.env")


# ---------------------------------------------------------------- a run


async def measured(args: argparse.Namespace, inventory: Path, base: Path, change: Path) -> dict[str, Any]:
    address = front_door(inventory)
    code, took, out = swarm(base, "deploy", "--phase", args.phases)
    if code != 0:
        raise SystemExit(f"preparing the fleet failed (exit {code}):\n{out[-3000:]}")
    if args.via == "litellm":
        url, models, headers = f"http://{address}/v1/chat/completions", ["primary", "secondary"], \
            {"Authorization": f"Bearer {secret('litellm_master_key')}"}
    else:
        url, models, headers = f"http://{address}/pool/v1/chat/completions", served_models(base), \
            {"Authorization": f"Bearer {secret('vllm_api_key')}"}
    load = Load(url=url, models=models, rate=args.rate, headers=headers, max_in_flight=args.max_in_flight)
    runner = asyncio.ensure_future(load.run(random.Random(args.seed)))
    await asyncio.sleep(args.before)
    deploy_start = time.monotonic()
    code, wall, out = await asyncio.to_thread(swarm, change, "deploy", "--phase", args.measured_phases)
    deploy_end = time.monotonic()
    await asyncio.sleep(args.after)
    load.stop.set()
    await runner
    before = [s for s in load.streams if s.started < deploy_start]
    during = [s for s in load.streams if deploy_start <= s.started < deploy_end]
    after = [s for s in load.streams if s.started >= deploy_end]
    return {"scenario": args.scenario, "strategy": args.strategy, "via": args.via, "rate_per_s": args.rate,
            "deploy": {"exit": code, "wall_s": round(wall, 1), "tail": out.strip().splitlines()[-6:]},
            "total": window(load.streams), "before": window(before), "during": window(during),
            "after": window(after), "token_rate": args.token_rate, "load_s": args.load_s,
            "command": " ".join(["python", "bench/rollout.py", *sys.argv[1:]])}


def served_models(inventory: Path) -> list[str]:
    data = yaml.safe_load(inventory.read_text())
    return sorted({str(data["nodes"][node]["services"][svc]["model"]) for svc, node in VLLMS.items()})


def plan_images(scenario: str, current: str) -> tuple[dict[str, str], dict[str, str]]:
    """(base, change) image tags per instance: every instance to the other tag; `broken`: the
    group's second instance (vllm-secondary) to an image that never becomes healthy."""
    other = IMAGES[1] if current == IMAGES[0] else IMAGES[0]
    base = dict.fromkeys(VLLMS, current)
    if scenario == "haproxy":
        return base, base
    change = dict.fromkeys(VLLMS, other)
    if scenario == "broken":
        change = {**base, "vllm-primary": other, "vllm-secondary": BROKEN}
    return base, change


def record(result: dict[str, Any], out: Path) -> None:
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault("scenarios", {})[f"rollout-{result['scenario']}-{result['strategy']}"] = {
        **result, "measured": time.strftime("%Y-%m-%d")}
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--inventory", type=Path, default=Path.home() / ".cache/swarm-lab/inventory.yml")
    parser.add_argument("--scenario", choices=["image", "broken", "haproxy"], default="image")
    parser.add_argument("--strategy", choices=["rolling", "recreate"], default="rolling")
    parser.add_argument("--via", choices=["pool", "litellm"], default="pool")
    parser.add_argument("--rate", type=float, default=3.0, help="requests a second (open loop)")
    parser.add_argument("--before", type=float, default=45.0)
    parser.add_argument("--after", type=float, default=45.0)
    parser.add_argument("--token-rate", type=int, default=64, help="the stand-in's tokens a second")
    parser.add_argument("--load-s", type=float, default=8.0, help="the stand-in's model loading time")
    parser.add_argument("--max-in-flight", type=int, default=200)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--current", choices=IMAGES, default=IMAGES[0], help="the image the fleet starts from")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results.json")
    args = parser.parse_args()
    if not 0 < args.rate <= 20 or args.before + args.after > 900:
        parser.error("a bounded load: --rate up to 20/s, --before + --after up to 900 s")
    same_model = args.scenario == "broken"
    args.phases = "2-4"
    args.measured_phases = "2" if args.scenario == "haproxy" else "3-4"
    base_images, change_images = plan_images(args.scenario, args.current)
    with tempfile.TemporaryDirectory(prefix="swarm-bench-rollout-") as tmp:
        base, change = Path(tmp) / "base.yml", Path(tmp) / "change.yml"
        inventory_variant(args.inventory, base, strategy=args.strategy, image=base_images, same_model=same_model,
                          token_rate=args.token_rate, load_s=args.load_s, rate_limit=None)
        inventory_variant(args.inventory, change, strategy=args.strategy, image=change_images,
                          same_model=same_model, token_rate=args.token_rate, load_s=args.load_s,
                          rate_limit=99999 if args.scenario == "haproxy" else None)
        result = asyncio.run(measured(args, args.inventory, base, change))
    record(result, args.out)
    sys.stdout.write(json.dumps({k: result[k] for k in ("scenario", "strategy", "deploy", "before", "during",
                                                        "after", "total")}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
