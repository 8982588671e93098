"""A model's architecture: the config.json figures that decide its weights and KV cache.

vLLM sizes nothing from a parameter count: it builds the layers config.json describes and
loads them. So swarm does the same arithmetic (bytes, per tensor-parallel rank):

    embeddings   vocab (padded to 64, as VocabParallelEmbedding does) x hidden, and the
                 same again for lm_head unless tie_word_embeddings
    per layer    q, k, v, o projections (heads x head_dim wide) and the MLP: 3 x hidden x
                 intermediate, or for a mixture of experts every expert's 3 x hidden x
                 moe_intermediate (all experts stay resident) plus the router
    rotary cache max_position_embeddings x head_dim, once
    bytes        2 per parameter (fp16/bf16); a 4-bit GPTQ/AWQ linear layer keeps 0.5 byte
                 per weight plus an fp16 scale and a 4-bit zero per group (0.52 B at
                 group 128); fp8/int8 weights 1 byte plus a 4-byte scale per output
                 channel. Embeddings, lm_head, norms and routers stay 16-bit.
    KV cache     2 (K and V) x layers x KV heads per rank x head_dim x bytes per value
                 (1 for an fp8 KV cache, else the model dtype) per token

Checked against vLLM's own "Model loading took X GiB" lines in tests/unit/fixtures/vllm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

GIB = 2**30
VOCAB_PADDING = 64
FP8_KV = frozenset({"fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc"})
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "half": 2, "float32": 2, "float": 2, "auto": 2}
_UNQUANTIZED = frozenset({"", "none", "fp16", "bf16", "float16", "bfloat16", "auto"})


@dataclass(frozen=True)
class Quantization:
    """How the linear layers' weights are stored (embeddings and norms are never quantized)."""

    method: str = "none"
    bits: int = 16
    group_size: int = 0

    @property
    def is_quantized(self) -> bool:
        return self.bits < 16

    def bytes_per_weight(self) -> float:
        if not self.is_quantized:
            return 2.0
        packed = self.bits / 8
        if self.group_size <= 0:
            return packed
        return packed + (2 + self.bits / 8) / self.group_size  # fp16 scale + packed zero per group


NO_QUANT = Quantization()


def quantization_named(method: str | None) -> Quantization:
    """The usual layout of a named method: gptq/awq 4-bit group 128, fp8/int8 per channel."""
    name = (method or "none").lower()
    if name in _UNQUANTIZED:
        return NO_QUANT
    if name in {"gptq", "awq", "gptq_marlin", "awq_marlin", "int4", "marlin"}:
        return Quantization(name.split("_")[0], 4, 128)
    if name in {"fp8", "int8", "w8a8", "compressed-tensors", "fbgemm_fp8", "modelopt"}:
        return Quantization(name, 8, 0)
    if name in {"bitsandbytes", "bnb"}:
        return Quantization(name, 4, 64)
    raise ValueError(f"unknown quantization {method!r}: expected gptq, awq, fp8, int8 or none")


@dataclass(frozen=True)
class ModelArch:
    """The figures from a model's config.json that size it in GPU memory."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    dtype_bytes: int = 2
    quant: Quantization = NO_QUANT
    source: str = ""

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def with_quantization(self, method: str | None) -> ModelArch:
        """The checkpoint's own quantization wins; `--quantization` only names it."""
        if self.quant.is_quantized or not method:
            return self
        return replace(self, quant=quantization_named(method))

    # ---------------------------------------------------------------- parameters

    def padded_vocab(self) -> int:
        return math.ceil(self.vocab_size / VOCAB_PADDING) * VOCAB_PADDING

    def attention_params(self, tp: int = 1) -> float:
        q = self.hidden_size * self.num_attention_heads * self.head_dim
        kv = 2 * self.hidden_size * self.kv_heads_per_rank(tp) * self.head_dim * tp
        return (2 * q + kv) / tp  # q and o, then k and v (replicated when KV heads < tp)

    def mlp_params(self, tp: int = 1) -> float:
        if not self.is_moe:
            return 3 * self.hidden_size * self.intermediate_size / tp
        experts = self.num_experts * 3 * self.hidden_size * self.moe_width()
        shared = 3 * self.hidden_size * self.shared_expert_intermediate_size
        return (experts + shared) / tp

    def moe_width(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    def router_params(self) -> int:
        return self.hidden_size * self.num_experts if self.is_moe else 0

    def embedding_params(self, tp: int = 1) -> float:
        copies = 1 if self.tie_word_embeddings else 2
        return copies * self.padded_vocab() * self.hidden_size / tp

    def parameters(self) -> float:
        """All parameters (one rank, no padding): the familiar "8B" figure."""
        layer = self.attention_params() + self.mlp_params() + self.router_params()
        copies = 1 if self.tie_word_embeddings else 2
        return self.num_hidden_layers * layer + copies * self.vocab_size * self.hidden_size

    # ---------------------------------------------------------------- bytes

    def weights_bytes(self, tp: int = 1) -> float:
        """What vLLM reports as "Model loading took": weights on one rank."""
        linear = self.num_hidden_layers * (self.attention_params(tp) + self.mlp_params(tp))
        linear_bytes = linear * self.quant.bytes_per_weight() + self._channel_scales(tp)
        plain = self.embedding_params(tp) + self.num_hidden_layers * (self.router_params() + 2 * self.hidden_size)
        rotary = self.max_position_embeddings * self.head_dim
        return linear_bytes + (plain + self.hidden_size + rotary) * self.dtype_bytes

    def _channel_scales(self, tp: int) -> float:
        if not self.quant.is_quantized or self.quant.group_size:
            return 0.0
        heads = (self.num_attention_heads + 2 * self.kv_heads_per_rank(tp) * tp) * self.head_dim
        width = self.moe_width() * max(1, self.num_experts)
        per_layer = heads + 2 * self.hidden_size + 2 * width  # outputs of qkv, o, gate_up, down
        return 4.0 * self.num_hidden_layers * per_layer / tp

    def weights_gib(self, tp: int = 1) -> float:
        return self.weights_bytes(tp) / GIB

    def kv_heads_per_rank(self, tp: int = 1) -> int:
        return max(1, self.num_key_value_heads // tp)

    def kv_bytes_per_token(self, kv_cache_dtype: str = "auto", tp: int = 1) -> int:
        value = 1 if kv_cache_dtype.lower() in FP8_KV else self.dtype_bytes
        return 2 * self.num_hidden_layers * self.kv_heads_per_rank(tp) * self.head_dim * value


# ---------------------------------------------------------------- config.json


def arch_from_config(config: Mapping[str, Any], source: str = "config.json") -> ModelArch:
    """A ModelArch from a Hugging Face config.json (text models; multimodal ones via text_config)."""
    cfg: Mapping[str, Any] = config.get("text_config") or config
    heads = _int(cfg, "num_attention_heads")
    hidden = _int(cfg, "hidden_size")
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
    return ModelArch(
        hidden_size=hidden,
        intermediate_size=_int(cfg, "intermediate_size"),
        num_hidden_layers=_int(cfg, "num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        vocab_size=_int(cfg, "vocab_size"),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or cfg.get("seq_length") or 4096),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
        num_experts=experts,
        num_experts_per_tok=int(cfg.get("num_experts_per_tok") or 0) if experts else 0,
        moe_intermediate_size=int(cfg.get("moe_intermediate_size") or 0) if experts else 0,
        shared_expert_intermediate_size=int(cfg.get("shared_expert_intermediate_size") or 0) if experts else 0,
        dtype_bytes=_DTYPE_BYTES.get(str(cfg.get("torch_dtype") or cfg.get("dtype") or "auto"), 2),
        quant=quantization_from_config(config.get("quantization_config") or cfg.get("quantization_config")),
        source=source,
    )


def quantization_from_config(qc: Mapping[str, Any] | None) -> Quantization:
    """quantization_config of GPTQ/AWQ (bits, group_size), fp8 and compressed-tensors checkpoints."""
    if not qc:
        return NO_QUANT
    method = str(qc.get("quant_method") or "unknown").lower()
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    if method in {"fp8", "fbgemm_fp8"}:
        return Quantization(method, 8, 0)
    bits = int(qc.get("bits") or qc.get("w_bit") or qc.get("weight_bits") or 4)
    group = int(qc.get("group_size") or qc.get("q_group_size") or 0)
    return Quantization(method, bits, max(group, 0))


def _compressed_tensors(qc: Mapping[str, Any]) -> Quantization:
    for group in (qc.get("config_groups") or {}).values():
        weights = (group or {}).get("weights") or {}
        bits = int(weights.get("num_bits") or 8)
        size = weights.get("group_size") if weights.get("strategy") == "group" else 0
        return Quantization("compressed-tensors", bits, int(size or 0))
    return Quantization("compressed-tensors", 8, 0)


def _int(cfg: Mapping[str, Any], key: str) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value
