"""The pieces of the plan's vLLM model: config.json parsing, quantized and sharded weights,
and the engine defaults that change from one vLLM version or card to the next."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.render.model_arch import (
    GIB,
    Quantization,
    arch_from_config,
    quantization_from_config,
    quantization_named,
)
from orchestrator.render.vllm_memory import (
    Card,
    VllmSettings,
    batch_defaults,
    cuda_graph_reserve_gib,
    engine_args,
    estimate,
    longest_context,
    parse_version,
    settings_from_args,
    utilization_needed,
)

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "vllm" / "configs"
RTX_3090 = Card("NVIDIA GeForce RTX 3090", 24576)
H100 = Card("NVIDIA H100 80GB HBM3", 81559)
A100_80 = Card("NVIDIA A100 80GB PCIe", 81920)


def config(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def settings(version: str = "0.6.3", **kw: object) -> VllmSettings:
    base = VllmSettings(version=parse_version(version), gpu_memory_utilization=0.9, max_model_len=8192)
    return replace(base, **kw)  # type: ignore[arg-type]


# --- config.json ------------------------------------------------------------------------------


def test_config_defaults_follow_transformers() -> None:
    """No num_key_value_heads means multi-head attention; no head_dim means hidden / heads."""
    arch = arch_from_config({"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                             "num_attention_heads": 32, "vocab_size": 32000})
    assert arch.num_key_value_heads == 32 and arch.head_dim == 128
    assert arch.max_position_embeddings == 4096 and not arch.tie_word_embeddings


def test_multimodal_configs_are_read_from_their_text_config() -> None:
    text = config("qwen2-7b-instruct.json")
    arch = arch_from_config({"architectures": ["X"], "text_config": text})
    assert arch == arch_from_config(text)


def test_quantization_configs() -> None:
    assert quantization_from_config({"quant_method": "gptq", "bits": 4, "group_size": 128}) == Quantization("gptq", 4, 128)
    assert quantization_from_config({"quant_method": "awq", "w_bit": 4, "q_group_size": 64}) == Quantization("awq", 4, 64)
    assert quantization_from_config({"quant_method": "gptq", "bits": 8, "group_size": -1}) == Quantization("gptq", 8, 0)
    assert quantization_from_config({"quant_method": "fp8"}).bits == 8
    fp8 = config("llama-3.3-70b-instruct-fp8-dynamic.json")["quantization_config"]
    assert quantization_from_config(fp8) == Quantization("compressed-tensors", 8, 0, skip_exact=("lm_head",))
    assert quantization_named("awq_marlin") == Quantization("awq", 4, 128)
    with pytest.raises(ValueError, match="unknown quantization 'squeeze'"):
        quantization_named("squeeze")


def test_the_checkpoints_own_quantization_wins_over_the_flag() -> None:
    gptq = arch_from_config(config("qwen1.5-7b-chat-gptq-int4.json"))
    assert gptq.with_quantization("awq").quant == Quantization("gptq", 4, 128)
    plain = arch_from_config(config("qwen2-7b-instruct.json"))
    assert plain.with_quantization("awq").quant.bits == 4 and plain.with_quantization(None) == plain


def test_4_bit_weights_are_about_a_quarter_plus_16_bit_embeddings() -> None:
    plain = arch_from_config(config("qwen2-7b-instruct.json"))
    awq = plain.with_quantization("awq")
    embeddings = 2 * 152064 * 3584 * 2 / GIB
    linear_16 = plain.weights_gib() - embeddings
    assert awq.weights_gib() - embeddings == pytest.approx(linear_16 * 0.5195 / 2, rel=0.01)


def test_tensor_parallel_splits_weights_and_replicates_too_few_kv_heads() -> None:
    """Qwen3-30B-A3B has 4 KV heads: TP 4 gives each rank one, TP 8 still one (replicated)."""
    moe = arch_from_config(config("qwen3-30b-a3b.json"))
    assert moe.parameters() / 1e9 == pytest.approx(30.5, abs=0.05)
    assert moe.weights_gib(4) == pytest.approx(moe.weights_gib(1) / 4, rel=0.01)
    assert moe.kv_bytes_per_token("auto", 4) == 2 * 48 * 1 * 128 * 2
    assert moe.kv_bytes_per_token("auto", 8) == moe.kv_bytes_per_token("auto", 4)
    assert moe.kv_bytes_per_token("fp8_e5m2", 4) * 2 == moe.kv_bytes_per_token("auto", 4)


# --- engine defaults per version and card -----------------------------------------------------


def test_v0_profiles_the_whole_context_until_chunked_prefill_switches_on_above_32k() -> None:
    assert batch_defaults(settings(max_model_len=1024), RTX_3090) == (2048, 256)
    assert batch_defaults(settings(max_model_len=29000), RTX_3090) == (29000, 256)
    assert batch_defaults(settings(max_model_len=35000), RTX_3090) == (512, 256)
    assert batch_defaults(settings(max_model_len=35000, max_num_batched_tokens=4096), RTX_3090)[0] == 4096


def test_v1_batch_defaults_grow_on_big_cards_except_a100() -> None:
    v1 = settings("0.10.1.1")
    assert batch_defaults(v1, RTX_3090) == (2048, 256)
    assert batch_defaults(v1, H100) == (8192, 1024)
    assert batch_defaults(v1, A100_80) == (2048, 256)   # vLLM leaves A100 on the small defaults
    assert batch_defaults(settings("0.8.5"), H100) == (2048, 256)
    assert batch_defaults(replace(v1, max_num_seqs=8), H100) == (8192, 8)


def test_engine_follows_the_version_unless_pinned() -> None:
    assert not settings("0.6.3").is_v1 and settings("0.8.0").is_v1
    assert not settings("0.8.5", engine="v0").is_v1
    assert settings("latest").is_v1 and parse_version("nightly-2026") == parse_version(None)


def test_cuda_graphs_count_inside_the_budget_only_when_the_environment_asks() -> None:
    """VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS defaults to 0 in every release (a 0.26 start logs
    its 0.48 GiB estimate beside a KV budget that did not lose it)."""
    assert cuda_graph_reserve_gib(settings("0.26.0")) == 0
    asked = settings_from_args({}, parse_version("0.26.0"), 32768,
                               {"VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": "1"})
    assert cuda_graph_reserve_gib(asked) == 0.5
    assert cuda_graph_reserve_gib(replace(asked, enforce_eager=True)) == 0


# --- the fixes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.6.3", "0.10.1.1", "0.21.0"])
def test_the_fixes_are_exact_edges(version: str) -> None:
    """The longest context that starts does, 256 tokens more does not; likewise utilization."""
    arch = arch_from_config(config("llama-3.1-8b-instruct.json"))
    s = settings(version, max_model_len=131072)
    assert not estimate(arch, s, RTX_3090).starts
    length = longest_context(arch, s, RTX_3090)
    assert estimate(arch, replace(s, max_model_len=length), RTX_3090).starts
    assert not estimate(arch, replace(s, max_model_len=length + 256), RTX_3090).starts
    s32 = replace(s, max_model_len=32768)
    util = utilization_needed(arch, s32, RTX_3090)
    if util <= 1.0:
        assert estimate(arch, replace(s32, gpu_memory_utilization=util), RTX_3090).starts
        assert not estimate(arch, replace(s32, gpu_memory_utilization=round(util - 0.01, 2)), RTX_3090).starts


# --- what the container will run ----------------------------------------------------------------


def test_engine_args_read_both_flag_forms_and_switches() -> None:
    argv = ["--host", "0.0.0.0", "--model", "m", "--max-model-len=4096", "-tp", "2",
            "--gpu_memory_utilization", "0.7", "--enforce-eager", "--kv-cache-dtype", "fp8"]
    args = engine_args(argv)
    assert args == {"model": "m", "max_model_len": "4096", "tensor_parallel_size": "2",
                    "gpu_memory_utilization": "0.7", "enforce_eager": True, "kv_cache_dtype": "fp8"}
    s = settings_from_args(args, parse_version("0.10.1"), 32768)
    assert (s.max_model_len, s.tensor_parallel_size, s.gpu_memory_utilization, s.enforce_eager) == (4096, 2, 0.7, True)


def test_absent_flags_are_vllms_defaults_and_the_environment_can_pin_v0() -> None:
    s = settings_from_args({}, parse_version("0.8.5"), 40960, {"VLLM_USE_V1": "0"})
    assert not s.is_v1 and s.max_model_len == 40960 and s.gpu_memory_utilization == 0.9
    chunked = settings_from_args({"enable_chunked_prefill": True}, parse_version("0.6.3"), 8192)
    assert batch_defaults(chunked, RTX_3090)[0] == 512
