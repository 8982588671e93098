"""nvidia-smi parsing on recorded answers (fixtures/gpu/README.md) and the GPU checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.facts.gpu import (
    NVIDIA_SMI_QUERY,
    GpuOutputError,
    GpuReading,
    check_count,
    check_driver,
    check_free_vram,
    check_model,
    check_thermal,
    check_vram,
    is_driver_at_least,
    is_model_match,
    is_too_hot,
    is_vram_match,
    parse_driver_version,
    parse_nvidia_smi,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "gpu"


def recorded(name: str) -> tuple[GpuReading, ...]:
    return parse_nvidia_smi((FIXTURES / name).read_text())


def test_query_is_the_documented_argv() -> None:
    assert NVIDIA_SMI_QUERY == (
        "nvidia-smi",
        "--query-gpu=index,name,memory.total,memory.used,memory.free,temperature.gpu,"
        "driver_version,utilization.gpu",
        "--format=csv,noheader,nounits",
    )


def test_rtx3080_v13_driver() -> None:
    (gpu,) = recorded("rtx3080-595.58.03.csv")
    assert gpu == GpuReading(0, "NVIDIA GeForce RTX 3080", 10240, 9184, 660, 27, "595.58.03", 65)


def test_gt1030_two_part_driver_version() -> None:
    (gpu,) = recorded("gt1030-470.74.csv")
    assert gpu.driver_version == "470.74"
    assert gpu.memory_total_mib == 1998
    assert is_driver_at_least("470.74", "470.74")
    assert not is_driver_at_least("470.74", "470.74.1")


def test_multi_gpu() -> None:
    gpus = recorded("dual-rtx2080-590.44.01.csv")
    assert [g.index for g in gpus] == [0, 1]
    assert all(g.name == "NVIDIA GeForce RTX 2080" and g.memory_free_mib == 7786 for g in gpus)
    assert check_count(gpus, 2).ok
    assert check_count(gpus, 1).status == "fail"


def test_unified_memory_board_reports_na_memory() -> None:
    (gpu,) = recorded("gb10-580.178.04.csv")
    assert gpu.memory_total_mib is None and gpu.memory_used_mib is None
    assert gpu.memory_free_mib is None
    assert gpu.temperature_c == 41
    assert check_vram(gpu, 131072).status == "warn"
    assert check_free_vram(gpu, 1000).status == "warn"
    assert check_thermal(gpu, 85).ok


def test_legacy_driver_not_supported_and_unprefixed_name() -> None:
    (gpu,) = recorded("geforce930m-legacy.csv")
    assert gpu.name == "GeForce 930M"
    assert gpu.utilization_pct is None
    assert is_model_match("NVIDIA GeForce 930M", gpu.name)


def test_no_devices_is_an_empty_answer() -> None:
    assert recorded("no-devices.txt") == ()


def test_driver_not_loaded_is_a_clear_error() -> None:
    with pytest.raises(GpuOutputError, match="NVIDIA-SMI has failed") as err:
        recorded("driver-not-loaded.txt")
    assert err.value.hint and "driver" in err.value.hint


def test_windows_line_endings_and_blank_lines() -> None:
    text = "\r\n0, NVIDIA GeForce RTX 4090, 24564, 1, 24080, 30, 550.54.15, 0\r\n\r\n"
    (gpu,) = parse_nvidia_smi(text)
    assert gpu.driver_version == "550.54.15" and gpu.memory_total_mib == 24564


def test_a_name_with_a_comma_keeps_the_other_columns_in_place() -> None:
    (gpu,) = parse_nvidia_smi("3, Weird, Card, 100, 1, 99, 40, 550.54.15, 7\n")
    assert gpu.name == "Weird, Card" and gpu.memory_total_mib == 100 and gpu.utilization_pct == 7


@pytest.mark.parametrize(
    "line",
    [
        "0, NVIDIA GeForce RTX 4090, 24564",
        "x, a, 1, 1, 1, 1, 1, 1",
        "0, a, lots, 1, 1, 1, 1, 1",
        "0, a, 1e400, 1, 1, 1, 1, 1",
    ],
)
def test_malformed_lines_raise(line: str) -> None:
    with pytest.raises(GpuOutputError):
        parse_nvidia_smi(line)


@given(st.text(max_size=200))
def test_parser_never_crashes_with_anything_else(text: str) -> None:
    try:
        parse_nvidia_smi(text)
    except GpuOutputError:
        pass


# --- checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "actual", "match"),
    [
        ("RTX 4090", "NVIDIA GeForce RTX 4090", True),
        ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090", True),
        ("rtx4090", "NVIDIA GeForce RTX 4090", True),
        ("GeForce RTX 3080", "NVIDIA GeForce RTX 3080", True),
        ("RTX 3080", "NVIDIA GeForce RTX 3080 Ti", False),
        ("RTX 3080", "NVIDIA GeForce RTX 3080 Laptop GPU", False),
        ("RTX 4090", "NVIDIA GeForce RTX 3090", False),
        ("A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", True),
        ("T4", "Tesla T4", True),
        ("", "NVIDIA GeForce RTX 4090", False),
    ],
)
def test_model_match_is_loose_but_not_sloppy(expected: str, actual: str, match: bool) -> None:
    assert is_model_match(expected, actual) is match


def test_check_model_names_both_sides() -> None:
    (gpu,) = recorded("rtx3080-595.58.03.csv")
    assert check_model(gpu, "RTX 3080").ok
    bad = check_model(gpu, "RTX 4090")
    assert bad.status == "fail" and "RTX 3080" in bad.message and "RTX 4090" in bad.message


def test_vram_within_tolerance() -> None:
    assert is_vram_match(24576, 24564)  # "24 GB" in the inventory vs what the 4090 reports
    assert is_vram_match(10240, 10240)
    assert not is_vram_match(24564, 10240)
    assert not is_vram_match(10240, None)
    (gpu,) = recorded("rtx3080-595.58.03.csv")
    assert check_vram(gpu, 10240).ok
    assert check_vram(gpu, 12288).status == "fail"


@pytest.mark.parametrize(
    ("actual", "minimum", "ok"),
    [
        ("550.54.15", "550.54.15", True),
        ("550.54.15", "535.104.05", True),
        ("535.104.05", "550.54.15", False),
        ("550.100", "550.54.15", True),  # numeric, not string, comparison
        ("550.54.9", "550.54.15", False),
        ("595.58.03", "550", True),
    ],
)
def test_driver_at_least(actual: str, minimum: str, ok: bool) -> None:
    assert is_driver_at_least(actual, minimum) is ok


def test_driver_version_errors() -> None:
    assert parse_driver_version("535.104.05") == (535, 104, 5)
    with pytest.raises(InputError):
        is_driver_at_least("550.54.15", "latest")
    with pytest.raises(GpuOutputError):
        is_driver_at_least("garbage", "550")
    (legacy,) = recorded("geforce930m-legacy.csv")
    assert check_driver(legacy, "550.54.15").status == "fail"
    (gpu,) = recorded("rtx3080-595.58.03.csv")
    assert check_driver(gpu, "550.54.15").ok


def test_thermal_gate_fails_at_the_limit() -> None:
    assert not is_too_hot(84, 85)
    assert is_too_hot(85, 85)
    assert is_too_hot(90, 85)
    hot = GpuReading(0, "NVIDIA GeForce RTX 4090", 24564, 20000, 4000, 90, "550.54.15", 100)
    finding = check_thermal(hot, 85.0)  # the inventory's thermal_limit_c is a float
    assert finding.status == "fail" and finding.hint
    assert "is at 90 °C, limit 85 °C" in finding.message
    cold = GpuReading(0, "x", None, None, None, None, None, None)
    assert check_thermal(cold, 85).status == "warn"


def test_free_vram_against_the_plan() -> None:
    (gpu,) = recorded("rtx3080-595.58.03.csv")  # 660 MiB free, something holds 9 GB
    assert check_free_vram(gpu, 600).ok
    short = check_free_vram(gpu, 8000)
    assert short.status == "fail" and "660 MiB free" in short.message


def test_the_lab_nvidia_smi_standin_speaks_the_parsed_format(tmp_path: Path) -> None:
    """Contract with orchestrator/lab/gpu.py: its stand-in answers NVIDIA_SMI_QUERY in the
    format parse_nvidia_smi reads, including a staged hot GPU."""
    lab_gpu = pytest.importorskip("orchestrator.lab.gpu")
    state = tmp_path / "gpu.json"
    state.write_text(
        json.dumps(
            {
                "driver_version": "550.54.15",
                "gpus": [
                    {"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory.total": 24564,
                     "memory.used": 1, "temperature.gpu": 90, "utilization.gpu": 0},
                ],
            }
        )
    )  # fmt: skip
    script = tmp_path / "nvidia-smi"
    script.write_text(lab_gpu.NVIDIA_SMI.replace("STATE_PATH", str(state)))
    answer = subprocess.run(
        [sys.executable, str(script), *NVIDIA_SMI_QUERY[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    (gpu,) = parse_nvidia_smi(answer.stdout)
    assert gpu == GpuReading(0, "NVIDIA GeForce RTX 4090", 24564, 1, 24563, 90, "550.54.15", 0)
    assert check_thermal(gpu, 85).status == "fail"
