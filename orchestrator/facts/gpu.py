"""GPU facts from `nvidia-smi` and the pure checks preflight runs on them.

`NVIDIA_SMI_QUERY` is the one command swarm runs on a GPU node; `parse_nvidia_smi`
turns its CSV answer into frozen `GpuReading`s, with None wherever the driver answers
`[N/A]` / `[Not Supported]` (unified-memory boards report no VRAM figure, old GeForce
drivers no utilisation). The checks compare a reading with the inventory and the
plan: card model (loosely: "RTX 4090" names "NVIDIA GeForce RTX 4090"), VRAM within
a tolerance, driver at least a minimum, temperature under the thermal limit (at or
above it fails), and free VRAM against what the phase will claim. Each check returns a
`GpuFinding` (status, message, hint) that preflight turns into a check result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrator.errors import InputError, RuntimeFailure

QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "name",
    "memory.total",
    "memory.used",
    "memory.free",
    "temperature.gpu",
    "driver_version",
    "utilization.gpu",
)
NVIDIA_SMI_QUERY: tuple[str, ...] = (
    "nvidia-smi",
    "--query-gpu=" + ",".join(QUERY_FIELDS),
    "--format=csv,noheader,nounits",
)
DEFAULT_VRAM_TOLERANCE = 0.03
_NO_DEVICES = "No devices were found"
# Words that brand a card rather than name it; inventories often leave them out.
_BRAND_WORDS = frozenset({"nvidia", "geforce", "tesla", "quadro", "gpu", "graphics"})
_TOKEN_RE = re.compile(r"[a-z]+|\d+")
_NUMBER_RE = re.compile(r"^-?\d{1,9}(?:\.\d+)?$")

Status = Literal["pass", "warn", "fail"]


class GpuOutputError(RuntimeFailure):
    """nvidia-smi answered with something that is not the CSV swarm asked for."""


@dataclass(frozen=True)
class GpuReading:
    """One GPU as nvidia-smi reports it; None where the driver answers `[N/A]` & co."""

    index: int
    name: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    temperature_c: int | None
    driver_version: str | None
    utilization_pct: int | None


@dataclass(frozen=True)
class GpuFinding:
    """Outcome of one check on one GPU: what preflight reports for it."""

    status: Status
    message: str
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "pass"


# --- parsing ------------------------------------------------------------------------


def parse_nvidia_smi(text: str) -> tuple[GpuReading, ...]:
    """Parse the output of NVIDIA_SMI_QUERY; raise GpuOutputError on anything else."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and lines[0].startswith(_NO_DEVICES):
        return ()
    return tuple(_parse_line(line) for line in lines)


def _parse_line(line: str) -> GpuReading:
    fields = [f.strip() for f in line.split(",")]
    if len(fields) < len(QUERY_FIELDS) or not fields[0].isdigit():
        raise GpuOutputError(
            f"nvidia-smi: unexpected output {line[:200]!r}",
            hint="run `nvidia-smi` on the node; the driver may be missing or not loaded",
        )
    extra = len(fields) - len(QUERY_FIELDS)  # a name with commas in it
    name = ", ".join(fields[1 : 2 + extra])
    total, used, free, temp, driver, util = fields[2 + extra :]
    return GpuReading(
        index=int(fields[0]),
        name=name,
        memory_total_mib=_number(total, line),
        memory_used_mib=_number(used, line),
        memory_free_mib=_number(free, line),
        temperature_c=_number(temp, line),
        driver_version=None if _is_missing(driver) else driver,
        utilization_pct=_number(util, line),
    )


def _is_missing(value: str) -> bool:
    return value.startswith("[") or value in ("", "N/A")


def _number(value: str, line: str) -> int | None:
    if _is_missing(value):
        return None
    if not _NUMBER_RE.match(value):
        raise GpuOutputError(f"nvidia-smi: {value!r} is not a number in {line[:200]!r}")
    return round(float(value))


# --- predicates ---------------------------------------------------------------------


def model_tokens(name: str) -> tuple[str, ...]:
    """`NVIDIA GeForce RTX 4090` -> ("rtx", "4090"): lowercase words/numbers, brand dropped."""
    return tuple(t for t in _TOKEN_RE.findall(name.lower()) if t not in _BRAND_WORDS)


def is_model_match(expected: str, actual: str) -> bool:
    """Same card once brand words, case and punctuation are ignored.

    "RTX 4090" matches "NVIDIA GeForce RTX 4090"; "RTX 3080" does not match
    "RTX 3080 Ti" or "RTX 3080 Laptop" (different cards, different VRAM).
    """
    wanted = model_tokens(expected)
    return bool(wanted) and wanted == model_tokens(actual)


def is_vram_match(
    expected_mib: int, actual_mib: int | None, tolerance: float = DEFAULT_VRAM_TOLERANCE
) -> bool:
    if actual_mib is None:
        return False
    return abs(actual_mib - expected_mib) <= expected_mib * tolerance


def parse_driver_version(text: str) -> tuple[int, ...]:
    """`550.54.15` -> (550, 54, 15); raise ValueError if it is not dotted numbers."""
    parts = text.strip().split(".")
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"not a driver version: {text!r}")
    return tuple(int(p) for p in parts)


def is_driver_at_least(actual: str, minimum: str) -> bool:
    """Numeric, part by part: 550.54.15 >= 535.104.05, and 470.74 < 470.74.1."""
    try:
        wanted = parse_driver_version(minimum)
    except ValueError:
        raise InputError(
            f"minimum driver version {minimum!r} is not dotted numbers", hint='e.g. "550.54.15"'
        ) from None
    try:
        return parse_driver_version(actual) >= wanted
    except ValueError:
        raise GpuOutputError(f"nvidia-smi reported driver version {actual!r}") from None


def is_too_hot(temperature_c: float, limit_c: float) -> bool:
    """The thermal gate: at or above the limit fails."""
    return temperature_c >= limit_c


def has_free_vram(reading: GpuReading, needed_mib: int) -> bool:
    return reading.memory_free_mib is not None and reading.memory_free_mib >= needed_mib


# --- checks ---------------------------------------------------------------------------


def check_count(readings: Sequence[GpuReading], expected: int) -> GpuFinding:
    found = len(readings)
    if found == expected:
        return GpuFinding("pass", f"{found} GPU(s) found")
    return GpuFinding(
        "fail",
        f"inventory lists {expected} GPU(s), nvidia-smi reports {found}",
        hint="check the card is seated and the driver loaded (`nvidia-smi -L`), or fix the inventory",
    )


def check_model(reading: GpuReading, expected: str) -> GpuFinding:
    if is_model_match(expected, reading.name):
        return GpuFinding("pass", f"GPU {reading.index} is {reading.name}")
    return GpuFinding(
        "fail",
        f"GPU {reading.index} is {reading.name!r}, inventory says {expected!r}",
        hint="fix gpus[].model in the inventory, or check the right node is addressed",
    )


def check_vram(
    reading: GpuReading, expected_mib: int, tolerance: float = DEFAULT_VRAM_TOLERANCE
) -> GpuFinding:
    actual = reading.memory_total_mib
    if actual is None:
        return GpuFinding(
            "warn",
            f"GPU {reading.index} ({reading.name}) reports no VRAM total ([N/A]); "
            f"inventory says {expected_mib} MiB",
            hint="unified-memory boards report no dedicated VRAM; budget against system RAM",
        )
    if is_vram_match(expected_mib, actual, tolerance):
        return GpuFinding("pass", f"GPU {reading.index} has {actual} MiB VRAM")
    return GpuFinding(
        "fail",
        f"GPU {reading.index} has {actual} MiB VRAM, inventory says {expected_mib} MiB "
        f"(tolerance {tolerance:.0%})",
        hint="fix gpus[].vram_mib in the inventory; every VRAM budget is computed from it",
    )


def check_driver(reading: GpuReading, minimum: str) -> GpuFinding:
    actual = reading.driver_version
    if actual is None:
        return GpuFinding("warn", f"GPU {reading.index}: driver version not reported")
    if is_driver_at_least(actual, minimum):
        return GpuFinding("pass", f"driver {actual} >= {minimum}")
    return GpuFinding(
        "fail",
        f"driver {actual} is older than the minimum {minimum}",
        hint="upgrade the NVIDIA driver on the node (and reboot), or lower the configured minimum",
    )


def check_thermal(reading: GpuReading, limit_c: float) -> GpuFinding:
    temp = reading.temperature_c
    if temp is None:
        return GpuFinding(
            "warn", f"GPU {reading.index}: temperature not reported; thermal gate cannot judge"
        )
    if is_too_hot(temp, limit_c):
        return GpuFinding(
            "fail",
            f"GPU {reading.index} ({reading.name}) is at {temp} °C, limit {limit_c:g} °C",
            hint="let it cool, check fans and airflow, or stop what is loading it before deploying",
        )
    return GpuFinding("pass", f"GPU {reading.index} at {temp} °C (limit {limit_c:g} °C)")


def check_free_vram(reading: GpuReading, needed_mib: int) -> GpuFinding:
    free = reading.memory_free_mib
    if free is None:
        return GpuFinding(
            "warn",
            f"GPU {reading.index}: free VRAM not reported; cannot confirm {needed_mib} MiB fits",
        )
    if has_free_vram(reading, needed_mib):
        return GpuFinding("pass", f"GPU {reading.index}: {free} MiB free, {needed_mib} MiB needed")
    return GpuFinding(
        "fail",
        f"GPU {reading.index}: {free} MiB free now, the phase needs {needed_mib} MiB",
        hint="stop what holds VRAM (`nvidia-smi --query-compute-apps=pid,used_memory "
        "--format=csv`), or lower gpu_memory_utilization / max_model_len",
    )


# --- CUDA: what the driver supports, what an image needs -----------------------------------------

NVIDIA_SMI_TABLE: tuple[str, ...] = ("nvidia-smi",)   # its header names the driver's highest CUDA
_CUDA_HEADER = re.compile(r"CUDA Version\s*:\s*(\d+\.\d+|N/A)")
_REQUIRE = re.compile(r"cuda\s*>=\s*(\d+\.\d+)")

# The least Linux driver of each CUDA release (NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit
# and Corresponding Driver Versions", the GA driver of each): the driver's CUDA when its own table
# prints none (`CUDA Version: N/A`, drivers before 410).
CUDA_DRIVERS: tuple[tuple[str, str], ...] = (
    ("13.0", "580.65.06"), ("12.9", "575.51.03"), ("12.8", "570.26"), ("12.6", "560.28.03"),
    ("12.5", "555.42.02"), ("12.4", "550.54.14"), ("12.3", "545.23.06"), ("12.2", "535.54.03"),
    ("12.1", "530.30.02"), ("12.0", "525.60.13"), ("11.8", "520.61.05"), ("11.7", "515.43.04"),
    ("11.6", "510.39.01"), ("11.5", "495.29.05"), ("11.4", "470.42.01"), ("11.3", "465.19.01"),
    ("11.2", "460.27.03"), ("11.1", "455.23"), ("11.0", "450.36.06"), ("10.2", "440.33"),
    ("10.1", "418.39"), ("10.0", "410.48"),
)


def parse_cuda_version(text: str) -> str | None:
    """`CUDA Version: 12.4` from nvidia-smi's table (or `-q`); None for `N/A` or no header."""
    match = _CUDA_HEADER.search(text)
    return match.group(1) if match and match.group(1) != "N/A" else None


def cuda_of_driver(driver: str) -> str | None:
    """The highest CUDA a driver version supports, by NVIDIA's table (None: older than CUDA 10)."""
    try:
        have = parse_driver_version(driver)
    except ValueError:
        return None
    return next((cuda for cuda, least in CUDA_DRIVERS if have >= parse_driver_version(least)), None)


def cuda_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2])


def required_cuda(env: Sequence[str]) -> str | None:
    """The CUDA an image needs, from its config's env: `NVIDIA_REQUIRE_CUDA`'s `cuda>=X.Y` (what
    nvidia-container-cli enforces), else `CUDA_VERSION`'s major.minor; None for a non-CUDA image
    or one that disables the check (`NVIDIA_DISABLE_REQUIRE`)."""
    values = dict(item.partition("=")[::2] for item in env)
    if values.get("NVIDIA_DISABLE_REQUIRE", "").lower() in ("1", "true"):
        return None
    match = _REQUIRE.search(values.get("NVIDIA_REQUIRE_CUDA", ""))
    if match:
        return match.group(1)
    version = re.match(r"(\d+\.\d+)", values.get("CUDA_VERSION", ""))
    return version.group(1) if version else None


def check_cuda(image: str, needed: str | None, driver_cuda: str | None, driver: str | None,
               newest_fit: str | None = None) -> GpuFinding:
    """Can the node's driver run the image's CUDA? (nvidia-container-cli refuses otherwise)."""
    if needed is None:
        return GpuFinding("pass", f"{image} names no CUDA requirement")
    if driver_cuda is None:
        return GpuFinding("warn", f"{image} needs CUDA {needed}; the driver's CUDA version is unknown")
    if cuda_tuple(driver_cuda) >= cuda_tuple(needed):
        return GpuFinding("pass", f"{image} needs CUDA {needed}, the driver {driver or '?'} supports {driver_cuda}")
    fit = (f"{newest_fit} is the newest tag of that image that runs on CUDA {driver_cuda}" if newest_fit
           else "no tag of that image swarm could read runs on it")
    least = next((d for c, d in CUDA_DRIVERS if c == needed), None)
    return GpuFinding(
        "fail",
        f"{image} needs CUDA {needed}, but the node's driver {driver or '?'} supports at most CUDA {driver_cuda}: "
        f"its containers would not start (nvidia-container-cli: unsatisfied condition cuda>={needed}); {fit}",
        hint=(f"upgrade the NVIDIA driver to {least} or newer" if least else "upgrade the NVIDIA driver")
        + (f", or pin image_tag to {newest_fit.rpartition(':')[2]}" if newest_fit else ""))
