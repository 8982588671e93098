"""The GPU memory budget, checked against figures worked out by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config.project import load_project
from orchestrator.errors import PlanError
from orchestrator.render.plan import (
    GIB,
    ModelFacts,
    kv_bytes_per_token,
    make_plan,
    require_feasible,
    weights_gib,
)

REPO = Path(__file__).resolve().parents[3]

MISTRAL_7B = ModelFacts(params_b=7.24, layers=32, kv_heads=8, head_dim=128, native_context=32768,
                        weights="gptq", source="config.json")
MIXTRAL = ModelFacts(params_b=46.7, layers=32, kv_heads=8, head_dim=128, native_context=32768,
                     weights="gptq", source="config.json")


def test_weights_worked_example() -> None:
    """Mistral-7B GPTQ: 7.24e9 params x 4 bits / 8 = 3.62e9 B; +10% quantization overhead
    = 3.982e9 B = 3.982e9 / 1073741824 = 3.709 GiB.  At bf16: 7.24e9 x 2 = 14.48e9 B = 13.486 GiB."""
    assert weights_gib(MISTRAL_7B, "gptq") == pytest.approx(3.709, abs=0.001)
    assert weights_gib(MISTRAL_7B, "bf16") == pytest.approx(13.486, abs=0.001)


def test_kv_cache_worked_example() -> None:
    """2 (K and V) x 32 layers x 8 KV heads x 128 head_dim x 1 byte (fp8) = 65,536 B per token;
    a full 32,768-token sequence = 2 GiB exactly; with fp16 KV (2 bytes) it doubles to 4 GiB."""
    assert kv_bytes_per_token(MISTRAL_7B, "fp8") == 65536
    assert kv_bytes_per_token(MISTRAL_7B, "fp8") * 32768 / GIB == 2.0
    assert kv_bytes_per_token(MISTRAL_7B, "auto") * 32768 / GIB == 4.0


def test_seed_plan_mixtral_worked_example() -> None:
    """Mixtral-8x7B GPTQ at 128K: weights 46.7e9 x 0.5 x 1.1 = 25.685e9 B = 23.92 GiB;
    KV 65,536 B x 131,072 tokens = 8 GiB; + 1.5 runtime = 33.42 GiB, against
    0.85 x 24,564 MiB = 20.39 GiB. Short by 13.0 GiB: it cannot fit, whatever the context."""
    assert weights_gib(MIXTRAL, "gptq") == pytest.approx(23.92, abs=0.01)
    assert kv_bytes_per_token(MIXTRAL, "fp8") * 131072 / GIB == 8.0


def test_shipped_fleet_fits_with_figures_by_hand() -> None:
    """starlord primary (Mistral-Nemo 12.2B AWQ, 64K, fp8): 12.2e9 x 0.5 x 1.1 = 6.71e9 B = 6.25 GiB;
    KV 2x40x8x128 = 81,920 B/token x 65,536 = 5 GiB; needed 6.25 + 5 + 1.5 = 12.75 GiB of
    0.60 x 23.99 = 14.39 GiB. Secondary 3.71 + 2 + 1.5 = 7.21 of 0.33 x 23.99 = 7.92 GiB.
    The card's fractions sum to 0.93."""
    plan = make_plan(load_project(REPO))
    assert plan.feasible, plan.problems
    starlord = next(n for n in plan.nodes if n.node.name == "starlord")
    card = starlord.cards[0]
    by_name = {e.service: e for e in card.instances}
    assert by_name["vllm-primary"].needed_gib == pytest.approx(12.75, abs=0.01)
    assert by_name["vllm-primary"].budget_gib == pytest.approx(14.39, abs=0.01)
    assert by_name["vllm-secondary"].needed_gib == pytest.approx(7.21, abs=0.01)
    assert card.utilization == pytest.approx(0.93)


def test_seed_plan_is_rejected_naming_starlords_gpu() -> None:
    project = load_project(REPO, inventory=REPO / "examples/seed-plan.yml")
    plan = make_plan(project)
    assert not plan.feasible
    text = "\n".join(plan.problems)
    assert "starlord GPU 0 (NVIDIA GeForce RTX 4090" in text
    assert "max_model_len 131072 exceeds" in text and "native context of 32768" in text
    assert "13.0 GiB over" in text
    with pytest.raises(PlanError) as err:
        require_feasible(plan, project.inventory.path)
    assert err.value.exit_code == 2


def test_suggestions_say_what_would_fit(project_copy: Path, edit_yaml) -> None:
    """Secondary at 32K with fp16 KV: 3.71 + 4 + 1.5 = 9.21 GiB of 7.92: the plan offers a context
    that fits (7.92 - 3.71 - 1.5 = 2.71 GiB / 131,072 B per token = 22,207 -> 21504 tokens), fp8 KV
    (2 GiB), and the utilisation that would be needed."""
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["starlord"]["services"]["vllm-secondary"].update({"kv_cache_dtype": "auto"}))
    plan = make_plan(load_project(project_copy))
    text = "\n".join(plan.problems)
    assert "vllm-secondary does not fit" in text
    assert "max_model_len <= 21504" in text
    assert "kv_cache_dtype fp8 (KV cache 2.0 GiB)" in text


def test_utilization_sum_over_one_is_refused(project_copy: Path, edit_yaml) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["starlord"]["services"]["vllm-secondary"].update({"gpu_memory_utilization": 0.5}))
    plan = make_plan(load_project(project_copy))
    assert any("adds up to 1.10" in p for p in plan.problems)


def test_unknown_model_asks_for_catalog_entry(project_copy: Path, edit_yaml) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"].update({"model": "acme/mystery-7b"}))
    plan = make_plan(load_project(project_copy))
    assert any("'acme/mystery-7b', which is not in roles/vllm/models.yml" in p for p in plan.problems)


def test_cli_plan_seed_exits_2_without_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan", "-i", "examples/seed-plan.yml"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "starlord GPU 0" in result.stderr and "Traceback" not in result.stderr
