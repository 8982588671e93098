"""The plan's vLLM memory model against published vLLM start-up logs.

Each file in tests/unit/fixtures/vllm is one recorded start: the log excerpt, its source, the
inputs that matter (model config, card, vLLM version and engine arguments) and what vLLM
logged. The model must land within 5% of the logged weights and within 10% of the logged KV
cache token count, and agree with vLLM on whether it started. Run with `-s` to see the table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.render.model_arch import GIB, ModelArch, arch_from_config
from orchestrator.render.vllm_memory import (
    Card,
    StartupEstimate,
    VllmSettings,
    estimate,
    parse_version,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vllm"
WEIGHTS_TOLERANCE = 0.05
TOKENS_TOLERANCE = 0.10


@dataclass(frozen=True)
class Case:
    name: str
    data: dict[str, Any]
    arch: ModelArch

    @property
    def logged(self) -> dict[str, Any]:
        return dict(self.data["logged"])

    @property
    def has_kv(self) -> bool:
        """Weights-only records (inputs behind the KV line not reported) log no start outcome."""
        return "starts" in self.logged

    def card(self) -> Card:
        gpu = self.data["gpu"]
        total = gpu.get("cuda_total_gib")
        return Card(gpu["name"], int(gpu["vram_mib"]), None if total is None else int(total * GIB))

    def settings(self) -> VllmSettings:
        v = self.data["vllm"]
        return VllmSettings(
            version=parse_version(str(v["version"])),
            gpu_memory_utilization=float(v.get("gpu_memory_utilization") or 0.9),
            max_model_len=int(v["max_model_len"]),
            max_num_seqs=v.get("max_num_seqs"),
            max_num_batched_tokens=v.get("max_num_batched_tokens"),
            kv_cache_dtype=str(v.get("kv_cache_dtype") or "auto"),
            block_size=int(v.get("block_size") or 16),
            tensor_parallel_size=int(v.get("tensor_parallel_size") or 1),
        )

    def predict(self) -> StartupEstimate:
        return estimate(self.arch, self.settings(), self.card())

    def logged_tokens(self) -> tuple[int, str]:
        """vLLM's own token count, or what its logged KV GiB holds (block-rounded, as vLLM does)."""
        if "kv_tokens" in self.logged:
            return int(self.logged["kv_tokens"]), "logged"
        settings = self.settings()
        per_block = settings.block_size * self.arch.kv_bytes_per_token(settings.kv_cache_dtype,
                                                                       settings.tensor_parallel_size)
        kv = float(self.logged["kv_gib"]) * GIB
        return max(0, int(kv // per_block)) * settings.block_size, "from GiB"


@cache
def cases() -> tuple[Case, ...]:
    out = []
    for path in sorted(FIXTURES.glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        config = json.loads((FIXTURES / data["model"]["config"]).read_text())
        arch = arch_from_config(config, data["model"]["config_source"])
        arch = arch.with_quantization(data["vllm"].get("quantization"))
        out.append(Case(path.stem, data, arch))
    return tuple(out)


def kv_cases() -> list[Case]:
    return [c for c in cases() if c.has_kv]


def error(predicted: float, logged: float) -> float:
    return (predicted - logged) / abs(logged) if logged else 0.0


def show(report: str) -> None:
    """The per-case table is what this file is for (issue 15): visible with `pytest -s`."""
    print("\n" + report)  # noqa: T201


def table(title: str, rows: list[tuple[str, str, str, float]]) -> str:
    lines = [title, f"  {'case':<40} {'predicted':>12} {'logged':>18} {'error':>8}"]
    lines += [f"  {n:<40} {p:>12} {lg:>22} {e:>+7.1%}" for n, p, lg, e in rows]
    return "\n".join(lines)


# --- the record itself -------------------------------------------------------------------------


def test_there_are_at_least_ten_recorded_starts_with_a_kv_outcome() -> None:
    assert len(kv_cases()) >= 10, [c.name for c in kv_cases()]


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_each_case_names_its_source_and_its_numbers_are_in_the_log(case: Case) -> None:
    """No number in a fixture that its log excerpt does not show (tokens may be blocks x size)."""
    data, log = case.data, case.data["log"]
    assert data["source"].startswith("https://github.com/"), data["source"]
    assert data["model"]["config_source"].startswith("https://huggingface.co/")
    for key in ("weights_gib", "kv_gib", "max_concurrency", "gpu_blocks"):
        if key in case.logged:
            assert _shown(case.logged[key], log), f"{case.name}: {key}={case.logged[key]} not in the log"
    if "kv_tokens" in case.logged:
        tokens = int(case.logged["kv_tokens"])
        blocks = case.logged.get("gpu_blocks")
        assert _shown(tokens, log) or (blocks and blocks * case.settings().block_size == tokens)


def _shown(value: Any, log: str) -> bool:
    text = str(value)
    variants = {text, f"{value:,}" if isinstance(value, int) else text, text.rstrip("0").rstrip(".")}
    return any(re.search(rf"(?<![\d.]){re.escape(v)}(?![\d])", log) for v in variants)


def test_the_record_covers_quantized_moe_and_both_kinds_of_card() -> None:
    archs = [c.arch for c in cases()]
    assert any(a.quant.method == "gptq" for a in archs) and any(a.quant.bits == 8 for a in archs)
    assert any(a.is_moe for a in archs) and any(not a.quant.is_quantized for a in archs)
    names = " ".join(c.data["gpu"]["name"] for c in kv_cases())
    assert "RTX 3090" in names and "A100" in names and "H100" in names
    assert {c.settings().is_v1 for c in kv_cases()} == {True, False}
    assert any(c.settings().tensor_parallel_size > 1 for c in kv_cases())


# --- the model against the record --------------------------------------------------------------


def test_weights_within_five_percent_of_model_loading_took() -> None:
    rows = []
    for case in cases():
        if "weights_gib" not in case.logged:
            continue
        predicted, logged = case.predict().weights_gib, float(case.logged["weights_gib"])
        rows.append((case.name, f"{predicted:.3f} GiB", f"{logged:.4f} GiB", error(predicted, logged)))
    report = table("weights (Model loading took)", rows)
    show(report)
    assert len(rows) >= 9
    assert all(abs(e) <= WEIGHTS_TOLERANCE for *_, e in rows), report


def test_kv_cache_tokens_within_ten_percent_of_the_log() -> None:
    rows = []
    for case in kv_cases():
        logged, how = case.logged_tokens()
        predicted = case.predict().kv_cache_tokens
        if logged == predicted == 0:  # a refused start holds no tokens: compare the KV GiB
            kv, logged_kv = case.predict().kv_gib, float(case.logged["kv_gib"])
            rows.append((case.name, f"{kv:.2f} GiB", f"{logged_kv:.2f} GiB", error(kv, logged_kv)))
            continue
        rows.append((case.name, f"{predicted:,}", f"{logged:,} ({how})", error(predicted, logged)))
    report = table("KV cache tokens", rows)
    show(report)
    assert all(abs(e) <= TOKENS_TOLERANCE for *_, e in rows), report


def test_starts_or_refuses_as_vllm_did() -> None:
    wrong = [(c.name, c.predict().starts, c.logged["starts"]) for c in kv_cases()
             if c.predict().starts != c.logged["starts"]]
    assert not wrong, wrong


def test_max_concurrency_where_vllm_logged_it() -> None:
    rows = [(c.name, f"{c.predict().max_concurrency:.2f}x", f"{c.logged['max_concurrency']}x",
             error(c.predict().max_concurrency, float(c.logged["max_concurrency"])))
            for c in kv_cases() if "max_concurrency" in c.logged]
    report = table("max concurrency at max_model_len", rows)
    show(report)
    assert len(rows) >= 4 and all(abs(e) <= TOKENS_TOLERANCE for *_, e in rows), report


def test_cuda_total_from_nvidia_smi_matches_what_vllm_logged() -> None:
    """Where a log gives CUDA's total, the plan's nvidia-smi-minus-reserve figure is within 1%."""
    seen = {(c.data["gpu"]["vram_mib"], c.data["gpu"]["cuda_total_gib"]) for c in cases()
            if c.data["gpu"].get("cuda_total_gib")}
    assert len(seen) >= 3
    for vram_mib, total_gib in seen:
        assert Card("x", vram_mib).total_gib == pytest.approx(total_gib, rel=0.01)
