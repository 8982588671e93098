"""CUDA against the driver: nvidia-smi's table (recorded real outputs), NVIDIA's driver table, an
image's CUDA from its config env, and the verdict preflight gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.facts.gpu import (
    CUDA_DRIVERS,
    check_cuda,
    cuda_of_driver,
    parse_cuda_version,
    required_cuda,
)
from orchestrator.lab import gpu as lab_gpu

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"


@pytest.mark.parametrize(("name", "cuda"), [
    ("smi-550.54.15-v100.txt", "12.4"),
    ("smi-470.57.02-quadro-p1000.txt", "11.4"),
    ("smi-470.82.01-cuda-na.txt", None),
])
def test_the_driver_cuda_comes_from_the_table_header(name: str, cuda: str | None) -> None:
    assert parse_cuda_version((FIXTURES / name).read_text()) == cuda


def test_the_query_csv_and_nothing_name_no_cuda() -> None:
    assert parse_cuda_version((FIXTURES / "rtx3080-595.58.03.csv").read_text()) is None
    assert parse_cuda_version((FIXTURES / "driver-not-loaded.txt").read_text()) is None


def test_a_driver_without_a_cuda_header_is_read_by_nvidias_table() -> None:
    assert cuda_of_driver("550.54.15") == "12.4"     # what the recorded 550.54.15 table prints
    assert cuda_of_driver("470.57.02") == "11.4"     # ... and the 470.57.02 one
    assert cuda_of_driver("535.54.03") == "12.2"
    assert cuda_of_driver("525.60.12") == "11.8"     # one patch below 12.0's least driver
    assert cuda_of_driver("390.48") is None
    assert [c for c, _ in CUDA_DRIVERS] == sorted((c for c, _ in CUDA_DRIVERS),
                                                  key=lambda v: tuple(map(int, v.split("."))), reverse=True)


def test_an_images_cuda_is_what_nvidia_container_cli_enforces() -> None:
    env = ["PATH=/usr/bin", "CUDA_VERSION=12.4.1",
           "NVIDIA_REQUIRE_CUDA=cuda>=12.4 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471"]
    assert required_cuda(env) == "12.4"
    assert required_cuda(["CUDA_VERSION=11.8.0"]) == "11.8"
    assert required_cuda(["PATH=/bin"]) is None
    assert required_cuda([*env, "NVIDIA_DISABLE_REQUIRE=true"]) is None


def test_a_mismatch_names_both_versions_and_the_tag_that_fits() -> None:
    finding = check_cuda("vllm/vllm-openai:v0.6.3", "12.4", "12.2", "535.54.03", "vllm/vllm-openai:v0.4.0")
    assert finding.status == "fail"
    assert "needs CUDA 12.4" in finding.message and "535.54.03 supports at most CUDA 12.2" in finding.message
    assert "vllm/vllm-openai:v0.4.0 is the newest tag" in finding.message
    assert finding.hint is not None and "550.54.14" in finding.hint and "v0.4.0" in finding.hint
    assert check_cuda("img", "12.4", "12.4", "550.54.15").status == "pass"
    assert check_cuda("img", "12.4", None, None).status == "warn"
    assert check_cuda("img", None, "11.4", "470.57.02").status == "pass"


def test_the_lab_standin_prints_the_cuda_of_the_driver_a_test_sets(tmp_path: Path) -> None:
    state = tmp_path / "gpu.json"
    script = tmp_path / "nvidia-smi"
    script.write_text(lab_gpu.NVIDIA_SMI.replace("STATE_PATH", str(state)))
    for driver, cuda in (("550.54.15", "12.4"), ("535.54.03", "12.2"), ("470.57.02", "11.4")):
        state.write_text(json.dumps({"driver_version": driver, "gpus": [
            {"index": 0, "name": "NVIDIA GeForce RTX 3080", "memory.total": 10240, "memory.used": 1,
             "temperature.gpu": 41, "utilization.gpu": 0}]}))
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
        assert parse_cuda_version(out) == cuda
