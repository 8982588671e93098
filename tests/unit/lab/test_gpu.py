"""The nvidia-smi stand-in and its state file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.facts import gpu as gpu_parser
from orchestrator.lab import gpu, layout


def _run(tmp_path: Path, state: dict, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    path = tmp_path / "gpu.json"
    gpu.write_state(path, state)
    script = tmp_path / "nvidia-smi"
    script.write_text(gpu.NVIDIA_SMI.replace("STATE_PATH", str(path)))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          check=False)


def _starlord() -> layout.NodeSpec:
    return layout.parse_nodes_option("starlord", light=False)[0]


def test_answers_swarms_query_and_the_parser_reads_it(tmp_path: Path) -> None:
    state = gpu.update_state(gpu.initial_state(_starlord()), 0, {"temperature": 90})
    result = _run(tmp_path, state, *gpu_parser.NVIDIA_SMI_QUERY[1:])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0, NVIDIA GeForce RTX 4090, 24564, 1, 24563, 90, 550.54.15, 0"
    parsed = gpu_parser.parse_nvidia_smi(result.stdout)
    assert parsed[0].name == "NVIDIA GeForce RTX 4090"


def test_any_subset_with_header_and_units(tmp_path: Path) -> None:
    result = _run(tmp_path, gpu.initial_state(_starlord()),
                  "--query-gpu=memory.used,name", "--format=csv")
    assert result.stdout.splitlines() == ["memory.used [MiB], name",
                                          "1 MiB, NVIDIA GeForce RTX 4090"]


def test_unknown_field_fails_like_nvidia_smi(tmp_path: Path) -> None:
    result = _run(tmp_path, gpu.initial_state(_starlord()), "--query-gpu=bogus",
                  "--format=csv,noheader")
    assert result.returncode == 2 and "not a valid field" in result.stderr


def test_set_unknown_field_is_refused() -> None:
    with pytest.raises(InputError):
        gpu.update_state(gpu.initial_state(_starlord()), 0, {"fan": 3})
    with pytest.raises(InputError):
        gpu.update_state(gpu.initial_state(_starlord()), 1, {"temperature": 3})
