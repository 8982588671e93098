"""`swarm plan` on the shipped fleet and the seed plan: figures worked out by hand, refusals
that name the card, the numbers and the fixes, and models read from their own config.json."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.config.project import load_project
from orchestrator.errors import PlanError
from orchestrator.render.model_arch import GIB, ModelArch, arch_from_config
from orchestrator.render.plan import (
    InstanceEstimate,
    Plan,
    as_dict,
    load_catalog,
    make_plan,
    require_feasible,
)
from orchestrator.render.vllm_memory import Card, StartupEstimate, estimate, max_safe_utilization

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "tests/unit/fixtures/vllm/configs"


def catalog_arch(name: str) -> ModelArch:
    return load_catalog(load_project(REPO)).models[name].arch()


def instances(plan: Plan) -> dict[str, InstanceEstimate]:
    return {e.service: e for n in plan.nodes for c in n.cards for e in c.instances}


def test_mistral_7b_gptq_weights_by_hand() -> None:
    """Linear layers: 32 x (q 4096x4096 + k,v 2 x 4096x1024 + o 4096x4096 + MLP 3 x 4096x14336)
    = 6,979,321,856 weights x (0.5 B + (2 + 0.5) B / 128) = 3,625,976,064 B; embeddings and lm_head
    2 x 32000 x 4096 x 2 B = 524,288,000 B; norms 65 x 4096 x 2 B; rotary cache 32768 x 128 x 2 B
    = 8,388,608 B. Total 4,159,185,152 B = 3.8735 GiB."""
    arch = catalog_arch("TheBloke/Mistral-7B-Instruct-v0.2-GPTQ")
    assert arch.weights_bytes() == pytest.approx(4_159_185_152, rel=1e-6)
    assert arch.kv_bytes_per_token("fp8") == 2 * 32 * 8 * 128 == 65536
    assert arch.kv_bytes_per_token("auto") == 131072


def test_mixtral_keeps_every_expert_resident() -> None:
    """46.7 B parameters (Mistral AI's figure for Mixtral 8x7B), all of them on the card."""
    arch = catalog_arch("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert arch.parameters() / 1e9 == pytest.approx(46.7, abs=0.05)
    assert arch.weights_gib() == pytest.approx(86.99, abs=0.01)


def test_shipped_fleet_plans_ok_with_tokens_and_concurrency_for_every_instance() -> None:
    plan = make_plan(load_project(REPO))
    assert plan.feasible, plan.problems
    found = instances(plan)
    assert set(found) == {"vllm-primary", "vllm-secondary", "vllm-backup"}
    for est in found.values():
        s = est.startup
        assert s.starts and s.kv_cache_tokens >= s.max_model_len
        assert s.budget_gib == pytest.approx(s.weights_gib + s.overhead_gib + s.kv_gib)
    primary = found["vllm-primary"].startup
    # 0.60 x (24564 - 450) MiB = 14.13 GiB; V0 profiles 512 tokens above 32K (chunked prefill)
    assert primary.budget_gib == pytest.approx(0.60 * (24564 - 450) / 1024)
    assert primary.batched_tokens == 512 and primary.max_concurrency > 1


def test_version_changes_the_answer_v0_profiles_the_whole_context(project_copy: Path, edit_yaml) -> None:
    """The same 32K Mistral-7B on 0.33 of a 4090: vLLM 0.6.3 (V0) profiles 32768 tokens at once
    and cannot keep one sequence; 0.10.1 (V1, chunked prefill of 2048 tokens) can."""
    def at_32k(tag: str) -> StartupEstimate:
        def change(d: dict) -> None:
            d["nodes"]["starlord"]["services"]["vllm-secondary"].update(
                {"max_model_len": 32768, "image_tag": tag})
        edit_yaml(project_copy / "inventory/swarm.yml", change)
        return instances(make_plan(load_project(project_copy)))["vllm-secondary"].startup
    v0, v1 = at_32k("v0.6.3"), at_32k("v0.10.1.1")
    assert (v0.engine, v0.batched_tokens, v0.starts) == ("V0", 32768, False)
    assert (v1.engine, v1.batched_tokens, v1.starts) == ("V1", 2048, True)
    assert v1.activation_gib < v0.activation_gib / 3


def test_the_plan_sizes_the_rendered_command_not_loose_vars(project_copy: Path, edit_yaml) -> None:
    """A setting the vllm role does not pass to vLLM changes nothing: vLLM would never see it.
    (A setting the role does not know at all is refused when the project loads.)"""
    before = instances(make_plan(load_project(project_copy)))["vllm-backup"].startup
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"].update({"healthy_deadline": "20m"}))
    after = instances(make_plan(load_project(project_copy)))["vllm-backup"].startup
    assert after == before and after.batched_tokens == 16384


def test_refusal_names_card_numbers_and_fixes_that_are_re_planned(project_copy: Path, edit_yaml) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"].update({"max_model_len": 32768}))
    plan = make_plan(load_project(project_copy))
    [problem] = plan.problems
    assert problem.startswith("thanos GPU 0 (NVIDIA GeForce RTX 3080, 9.56 GiB usable): vllm-backup cannot start")
    assert "one 32768-token sequence needs 2.00 GiB" in problem and "0.85 x 9.56 GiB" in problem
    est = instances(plan)["vllm-backup"]
    assert f"max_model_len {est.fix_max_model_len} " in problem
    # the fix is real, margin included: it starts, one step further does not
    assert est.fix_max_model_len and 16384 < est.fix_max_model_len < 32768
    longer = replace(est.settings, max_model_len=est.fix_max_model_len + 256)
    assert estimate(catalog_arch(est.model), replace(est.settings, max_model_len=est.fix_max_model_len),
                    Card("NVIDIA GeForce RTX 3080", 10240)).starts
    assert not estimate(catalog_arch(est.model), longer, Card("NVIDIA GeForce RTX 3080", 10240)).starts
    # no utilization is offered that would leave the card too little beside vLLM's share
    assert "gpu_memory_utilization 0.9" not in problem and "gpu_memory_utilization 1.0" not in problem


def test_a_utilization_fix_is_offered_only_where_it_leaves_room_beside_the_share(project_copy: Path,
                                                                                 edit_yaml) -> None:
    """On the 24 GB card, the secondary at a fifth of the card needs a larger share: the fix
    names it, and that share re-planned starts and leaves what vLLM needs beside it."""
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["starlord"]["services"]["vllm-secondary"].update(
                  {"gpu_memory_utilization": 0.2}))
    plan = make_plan(load_project(project_copy))
    est = instances(plan)["vllm-secondary"]
    [problem] = [p for p in plan.problems if "vllm-secondary" in p]
    util = est.fix_utilization
    assert util is not None and f"gpu_memory_utilization {util:.2f} (keeps max_model_len 16384" in problem
    card = Card("NVIDIA GeForce RTX 4090", 24564)
    assert estimate(catalog_arch(est.model), replace(est.settings, gpu_memory_utilization=util), card).starts
    assert util <= max_safe_utilization(est.settings, card)


def test_seed_plan_is_rejected_naming_starlords_gpu() -> None:
    project = load_project(REPO, inventory=REPO / "examples/seed-plan.yml")
    plan = make_plan(project)
    text = "\n".join(plan.problems)
    assert "starlord GPU 0 (NVIDIA GeForce RTX 4090" in text
    assert "max_model_len 131072 exceeds" in text and "native context of 32768" in text
    assert "vllm-primary cannot start" in text and "the weights alone are 22.97 GiB" in text
    with pytest.raises(PlanError) as err:
        require_feasible(plan, project.inventory.path)
    assert err.value.exit_code == 2 and "seed-plan.yml" in str(err.value)


def test_utilization_sum_over_one_is_refused(project_copy: Path, edit_yaml) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["starlord"]["services"]["vllm-secondary"].update({"gpu_memory_utilization": 0.5}))
    plan = make_plan(load_project(project_copy))
    assert any("adds up to 1.10" in p for p in plan.problems)


def test_unknown_model_says_where_it_looked(project_copy: Path, edit_yaml) -> None:
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"].update(
                  {"model": "acme/mystery-7b", "hf_cache": str(project_copy / "no-cache")}))
    plan = make_plan(load_project(project_copy))
    assert any("'acme/mystery-7b', which is not in roles/vllm/models.yml and has no config.json" in p
               for p in plan.problems)


def test_model_missing_from_the_catalog_is_sized_from_a_local_config(project_copy: Path, edit_yaml) -> None:
    local = project_copy / "models/coder-7b"
    local.mkdir(parents=True)
    (local / "config.json").write_text((CONFIGS / "qwen2-7b-instruct.json").read_text())
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"].update(
                  {"model": "./models/coder-7b", "quantization": "awq", "max_model_len": 4096}))
    est = instances(make_plan(load_project(project_copy)))["vllm-backup"]
    assert est.model_source == str(local / "config.json")
    assert est.startup.kv_bytes_per_token == 2 * 28 * 4 * 128 * 1   # fp8 KV from the inventory
    assert est.startup.weights_gib == pytest.approx(
        arch_from_config(json.loads((local / "config.json").read_text())).with_quantization("awq").weights_gib())


def test_model_is_found_in_a_hugging_face_cache_layout(project_copy: Path, edit_yaml) -> None:
    """<cache>/models--org--name/snapshots/<rev>/config.json, the revision refs/main names."""
    cache = project_copy / "hf/hub"
    repo = cache / "models--acme--tiny-coder"
    for rev in ("old", "abc123"):
        (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "snapshots/old/config.json").write_text("{}")  # a stale snapshot that is not main
    (repo / "snapshots/abc123/config.json").write_text((CONFIGS / "qwen3-0.6b.json").read_text())
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("abc123\n")
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"].update(
                  {"model": "acme/tiny-coder", "quantization": None, "hf_cache": str(cache)}))
    plan = make_plan(load_project(project_copy))
    est = instances(plan)["vllm-backup"]
    assert plan.feasible, plan.problems
    assert est.model_source.endswith("snapshots/abc123/config.json")
    assert est.startup.weights_gib == pytest.approx(1.12, abs=0.01)  # what vLLM logged for Qwen3-0.6B


def test_a_broken_config_json_is_bad_input_naming_the_file(project_copy: Path, edit_yaml) -> None:
    local = project_copy / "models/broken"
    local.mkdir(parents=True)
    config = json.loads((CONFIGS / "qwen2-7b-instruct.json").read_text())
    (local / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))
    edit_yaml(project_copy / "inventory/swarm.yml",
              lambda d: d["nodes"]["thanos"]["services"]["vllm-backup"].update({"model": str(local)}))
    with pytest.raises(PlanError) as err:
        make_plan(load_project(project_copy))
    assert str(local / "config.json") in str(err.value) and "hidden_size" in str(err.value)


def test_json_carries_kv_cache_tokens_and_max_concurrency_per_instance() -> None:
    data = as_dict(make_plan(load_project(REPO)))
    rows = [i for n in data["nodes"].values() for g in n["gpus"] for i in g["instances"]]
    assert len(rows) == 3
    assert any(row["kv_cache_tokens"] for row in rows)
    for row in rows:
        assert row["max_concurrency"] >= 1
        if row["kv_cache_tokens"] is None:   # a band wider than 10% of the figure: said, not guessed
            assert any("kv_cache_tokens" in why for why in row["cannot_predict"]), row
            continue
        assert row["weights_gib"] + row["overhead_gib"] + row["kv_budget_gib"] == pytest.approx(row["budget_gib"], abs=0.01)
        assert row["kv_cache_tokens"] * row["kv_bytes_per_token"] <= (row["kv_budget_gib"] + 0.001) * GIB


def test_cli_plan_json_and_seed_refusal() -> None:
    ok = CliRunner().invoke(main, ["--project", str(REPO), "plan", "--output", "json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["feasible"] is True
    bad = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan", "-i", "examples/seed-plan.yml"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2
    assert "seed-plan.yml" in bad.stderr and "starlord GPU 0" in bad.stderr and "Traceback" not in bad.stderr
    assert "kv_cache_tokens" in bad.stdout and "CANNOT START" in bad.stdout
