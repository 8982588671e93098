"""GPU emulation for lab nodes: an `nvidia-smi` stand-in reading a per-node state file.

The state file is `<node>/opt/swarm-lab/gpu.json` on the host, which the node sees as
`/opt/swarm-lab/gpu.json` (its /opt is a per-node bind mount). Keys are nvidia-smi's own
query field names, so a test can set any of them (`Lab.set_gpu("starlord",
temperature=90)`) and the next `nvidia-smi --query-gpu=...` answers with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.facts.gpu import CUDA_DRIVERS
from orchestrator.lab.layout import NodeSpec

DRIVER_VERSION = "550.54.15"
STATE_IN_NODE = "/opt/swarm-lab/gpu.json"

# friendly keyword -> nvidia-smi field name
ALIASES = {
    "temperature": "temperature.gpu",
    "temperature_c": "temperature.gpu",
    "memory_used": "memory.used",
    "memory_used_mib": "memory.used",
    "memory_total": "memory.total",
    "memory_total_mib": "memory.total",
    "utilization": "utilization.gpu",
    "utilization_pct": "utilization.gpu",
    "driver": "driver_version",
    "power_draw": "power.draw",
    "cuda": "cuda_version",
}


def initial_state(spec: NodeSpec) -> dict[str, Any]:
    gpus = []
    for index, gpu in enumerate(spec.gpus):
        gpus.append({
            "index": index, "name": gpu.name, "uuid": f"GPU-{spec.number:08x}-0000-4000-8000-"
            f"{index:012x}", "memory.total": gpu.memory_mib, "memory.used": 1,
            "temperature.gpu": 41, "utilization.gpu": 0, "power.draw": 21.5,
            "pci.bus_id": f"00000000:{index + 1:02X}:00.0",
        })
    return {"driver_version": DRIVER_VERSION, "gpus": gpus}


def field_name(key: str) -> str:
    name = ALIASES.get(key, key)
    if name not in {"index", "name", "uuid", "memory.total", "memory.used", "temperature.gpu",
                    "utilization.gpu", "power.draw", "pci.bus_id", "driver_version", "cuda_version"}:
        raise InputError(f"set_gpu: unknown field {key!r}",
                         hint=f"use one of {sorted(ALIASES)} or an nvidia-smi field name")
    return name


def update_state(state: dict[str, Any], index: int, fields: dict[str, Any]) -> dict[str, Any]:
    """Return state with fields (friendly or nvidia-smi names) set on GPU `index`."""
    gpus = [dict(g) for g in state.get("gpus", [])]
    if not 0 <= index < len(gpus):
        raise InputError(f"set_gpu: node has no GPU {index}")
    out = dict(state, gpus=gpus)
    for key, value in fields.items():
        name = field_name(key)
        if name in ("driver_version", "cuda_version"):
            out[name] = value
        else:
            gpus[index][name] = value
    return out


def write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o644)
    tmp.replace(path)


NVIDIA_SMI = r'''#!/usr/bin/python3
"""nvidia-smi stand-in of the swarm lab (state: STATE_PATH)."""
import json, sys

STATE = "STATE_PATH"
UNITS = {"memory.total": " MiB", "memory.used": " MiB", "memory.free": " MiB",
         "utilization.gpu": " %", "power.draw": " W"}
HEADERS = {"memory.total": "memory.total [MiB]", "memory.used": "memory.used [MiB]",
           "memory.free": "memory.free [MiB]", "utilization.gpu": "utilization.gpu [%]",
           "power.draw": "power.draw [W]"}


# The least driver of each CUDA release (orchestrator/facts/gpu.py CUDA_DRIVERS): the header's
# "CUDA Version" follows the driver a test sets, unless the state names one ("cuda_version").
CUDA_DRIVERS = CUDA_TABLE


def cuda_version(state):
    if state.get("cuda_version"):
        return state["cuda_version"]
    have = tuple(int(p) for p in str(state["driver_version"]).split("."))
    for cuda, least in CUDA_DRIVERS:
        if have >= tuple(int(p) for p in least.split(".")):
            return cuda
    return "N/A"


def load():
    with open(STATE) as handle:
        return json.load(handle)


def value(state, gpu, field, units):
    if field == "driver_version":
        raw = state["driver_version"]
    elif field == "memory.free":
        raw = int(gpu["memory.total"]) - int(gpu["memory.used"])
    elif field in gpu:
        raw = gpu[field]
    else:
        sys.stderr.write('Field "%s" is not a valid field to query.\n' % field)
        sys.exit(2)
    return "%s%s" % (raw, UNITS.get(field, "") if units else "")


def query(state, fields, fmt):
    opts = [o.strip() for o in fmt.split(",")]
    units = "nounits" not in opts
    lines = [] if "noheader" in opts else [", ".join(HEADERS.get(f, f) for f in fields)]
    for gpu in state["gpus"]:
        lines.append(", ".join(value(state, gpu, f, units) for f in fields))
    return lines


def main(argv):
    state = load()
    if not state["gpus"]:
        print("No devices were found")
        return 6
    opts = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, val = arg[2:].split("=", 1)
            opts[key] = val
    if "-L" in argv or "--list-gpus" in argv:
        for g in state["gpus"]:
            print("GPU %s: %s (UUID: %s)" % (g["index"], g["name"], g["uuid"]))
        return 0
    if "query-gpu" in opts:
        fields = [f.strip() for f in opts["query-gpu"].split(",") if f.strip()]
        print("\n".join(query(state, fields, opts.get("format", "csv"))))
        return 0
    print("| NVIDIA-SMI %s    Driver Version: %s    CUDA Version: %s     |"
          % (state["driver_version"], state["driver_version"], cuda_version(state)))
    for g in state["gpus"]:
        print("|   %s  %-30s | %5sC | %6sMiB / %6sMiB | %3s%% |" % (
            g["index"], g["name"], g["temperature.gpu"], g["memory.used"],
            g["memory.total"], g["utilization.gpu"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


NVIDIA_SMI = NVIDIA_SMI.replace("CUDA_TABLE", repr(CUDA_DRIVERS))


def nvidia_smi_script() -> str:
    return NVIDIA_SMI.replace("STATE_PATH", STATE_IN_NODE)
