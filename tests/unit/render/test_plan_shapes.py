"""The shapes vLLM runs, as the plan sizes them: MLA, sliding-window and hybrid layers per
vLLM version, what a quantization_config leaves unquantized, MXFP4 and bitsandbytes, the
checkpoint's own tensor sizes, config.json from staged weights, and "cannot predict"."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from orchestrator.render.hf_config import find_config, load_arch, tensor_bytes
from orchestrator.render.model_arch import FULL, SLIDING, arch_from_config
from orchestrator.render.vllm_memory import Card, VllmSettings, estimate, parse_version

GPT_OSS_20B = {  # https://huggingface.co/openai/gpt-oss-20b/blob/main/config.json (figures that size it)
    "model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 24,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 201088,
    "max_position_embeddings": 131072, "num_local_experts": 32, "num_experts_per_tok": 4,
    "sliding_window": 128, "tie_word_embeddings": False,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
}
DEEPSEEK_V2_LITE = {  # https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite/blob/main/config.json
    "model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944, "num_hidden_layers": 27,
    "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 102400,
    "max_position_embeddings": 163840, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
    "v_head_dim": 128, "q_lora_rank": None, "n_routed_experts": 64, "num_experts_per_tok": 6,
    "moe_intermediate_size": 1408, "n_shared_experts": 2, "first_k_dense_replace": 1,
}
LLAMA_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072}
H100 = Card("NVIDIA H100 80GB HBM3", 81559)


def settings(version: str, **kw: object) -> VllmSettings:
    base = dict(version=parse_version(version), gpu_memory_utilization=0.9, max_model_len=32768)
    return VllmSettings(**{**base, **kw})  # type: ignore[arg-type]


def test_mla_caches_one_latent_per_layer_on_every_rank_from_0_7_1() -> None:
    arch = arch_from_config(DEEPSEEK_V2_LITE)
    assert arch.kv_layer_bytes(0, "auto", tp=2) == (512 + 64) * 2
    assert arch.kv_layer_bytes(0, "auto", tp=2, mla_native=False) == 2 * 8 * 192 * 2
    new, old = estimate(arch, settings("0.8.5"), H100), estimate(arch, settings("0.6.3"), H100)
    assert new.kv_bytes_per_token == 27 * 576 * 2
    assert new.kv_cache_tokens > 5 * old.kv_cache_tokens


def test_gpt_oss_experts_are_mxfp4_and_the_rest_stays_16_bit() -> None:
    arch = arch_from_config(GPT_OSS_20B)
    assert arch.layer_types[:2] == (SLIDING, FULL) and arch.sliding_window == 128
    experts = 24 * 32 * 3 * 2880 * 2880 * (0.5 + 1 / 32)
    rest = arch.weights_bytes() - experts
    assert rest == arch.weights_bytes() - experts and 3.3e9 < rest < 3.8e9   # attention + embeddings in bf16


def test_sliding_layers_are_full_attention_until_v1_0_10_then_the_hybrid_manager() -> None:
    arch = arch_from_config(GPT_OSS_20B)
    v0 = estimate(arch, settings("0.6.3"), H100)
    hybrid = estimate(arch, settings("0.10.1"), H100)
    per_layer = 2 * 8 * 64 * 2
    assert v0.kv_bytes_per_token == 24 * per_layer
    # 2 groups of 12: the logged tokens are blocks // 2 x 16, the same count as all-full...
    blocks = int(hybrid.kv_gib * 2**30 // (16 * per_layer) // 12)
    assert hybrid.kv_cache_tokens == blocks // 2 * 16
    # ...but a request needs only window - 1 + 8192 batched tokens in the sliding layers:
    # (32768 + 8320) / (2 x 32768) of the blocks, 1.59x the concurrency of all-full
    assert 1.55 < hybrid.concurrency / (hybrid.kv_cache_tokens / 32768) < 1.65


def test_what_quantization_config_leaves_unquantized_stays_16_bit() -> None:
    fp8_all = {**LLAMA_8B, "quantization_config": {"quant_method": "fp8"}}
    fp8_no_attention = {**LLAMA_8B, "quantization_config": {"quant_method": "fp8",
                                                            "modules_to_not_convert": ["self_attn"]}}
    ct_ignore = {**LLAMA_8B, "quantization_config": {
        "quant_method": "compressed-tensors", "ignore": ["lm_head", "re:.*self_attn.*"],
        "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8, "strategy": "channel"}}}}}
    attention = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024)
    whole = arch_from_config(fp8_all).weights_bytes()
    assert arch_from_config(fp8_no_attention).weights_bytes() - whole == attention * (2 - 1)
    assert arch_from_config(ct_ignore).weights_bytes() - whole == attention * (2 - 1)


def test_bitsandbytes_nf4_with_and_without_double_quant() -> None:
    nf4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    single = arch_from_config({**LLAMA_8B, "quantization_config": nf4}).quant.bytes_per_weight()
    double = arch_from_config({**LLAMA_8B, "quantization_config": {**nf4, "bnb_4bit_use_double_quant": True}})
    assert single == 0.5 + 4 / 64 and double.quant.bytes_per_weight() < single


def test_unmodelled_shapes_say_cannot_predict_naming_the_field() -> None:
    linear = {**LLAMA_8B, "layer_types": ["linear_attention", "full_attention"] * 16}
    est = estimate(arch_from_config(linear), settings("0.10.1"), H100)
    assert est.verdict == "uncertain" and any("linear_attention" in c for c in est.cannot_predict)
    vision = estimate(arch_from_config({"text_config": LLAMA_8B, "vision_config": {"hidden_size": 1}}),
                      settings("0.10.1"), H100)
    assert any(c.startswith("vision_config") for c in vision.cannot_predict)
    gguf = arch_from_config({**LLAMA_8B, "quantization_config": {"quant_method": "gguf"}})
    assert any("gguf" in c for c in gguf.unsupported)


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    header = json.dumps({n: {"dtype": d, "shape": s, "data_offsets": [0, 0]} for n, (d, s) in tensors.items()})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode())


def test_staged_weights_come_first_and_their_tensor_sizes_are_summed(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    staged = mirror / "acme/coder/abc123"
    staged.mkdir(parents=True)
    (staged / "config.json").write_text(json.dumps(LLAMA_8B))
    _safetensors(staged / "model-00001.safetensors", {"a": ("BF16", [1024, 1024]), "b": ("F8_E4M3", [2048, 512])})
    cache = tmp_path / "hub/models--acme--coder/snapshots/zzz"
    cache.mkdir(parents=True)
    (cache / "config.json").write_text(json.dumps(LLAMA_8B))
    found = find_config("acme/coder", tmp_path, [tmp_path / "hub"], [mirror])
    assert found is not None and found.where == "staged weights" and found.path == staged / "config.json"
    assert tensor_bytes(staged) == (1024 * 1024 * 2 + 2048 * 512, "1 safetensors header(s)")
    assert load_arch(staged / "config.json").tensor_bytes == 1024 * 1024 * 2 + 2048 * 512
    hub = find_config("acme/coder", tmp_path, [tmp_path / "hub"], [])
    assert hub is not None and hub.where == "hub cache"


def test_an_index_total_size_is_used_where_no_shard_is_staged(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 16060522496}}))
    assert tensor_bytes(tmp_path) == (16060522496.0, "model.safetensors.index.json total_size")
