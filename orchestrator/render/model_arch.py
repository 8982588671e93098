"""A model's architecture: the config.json figures that decide its weights and KV cache.

vLLM sizes nothing from a parameter count: it builds the layers config.json describes and
loads them. So swarm does the same arithmetic, per tensor-parallel rank and pipeline stage:

    embeddings   vocab (padded to 64, as VocabParallelEmbedding does) x hidden on the first
                 stage, and lm_head on the last unless tie_word_embeddings; both split by TP
    attention    q, k, v, o projections (heads x head_dim wide; KV heads replicated when
                 there are fewer than TP ranks), or multi-head latent attention (DeepSeek
                 V2/V3: q_a/q_b or q, kv_a_proj_with_mqa, kv_b and o from q_lora_rank,
                 kv_lora_rank, qk_nope/qk_rope/v head dims)
    MLP          3 x hidden x intermediate, or for a mixture of experts every expert's
                 3 x hidden x moe_intermediate (all experts stay resident), shared experts
                 and the router; DeepSeek's first_k_dense_replace layers stay dense
    bytes        the model dtype (2) per parameter, unless the checkpoint's
                 quantization_config quantizes that module: 4-bit GPTQ/AWQ 0.5 B plus an fp16
                 scale and a 4-bit zero per group; fp8/int8 1 B plus its scales; MXFP4 (the
                 experts of gpt-oss) 4.25 bits; bitsandbytes nf4 0.5 B plus absmax. What the
                 config leaves unquantized (`ignore`, `modules_to_not_convert`,
                 `llm_int8_skip_modules`, `ignored_layers`) stays 16-bit, module by module.
    KV cache     per layer and token: 2 (K and V) x KV heads per rank x head_dim x bytes, or
                 with MLA (kv_lora_rank + qk_rope_head_dim) x bytes, the same on every rank;
                 per-layer kinds (full or sliding-window attention) from `layer_types`,
                 `sliding_window_pattern` or Gemma 2's alternation, for the KV cache manager
                 of each vLLM version to allocate (render/vllm_memory.py).

Where a checkpoint's tensor sizes are known (render/hf_config.py reads the safetensors
headers, or the index's total_size) they replace the computed total, keeping the computed
split between ranks. A config field this module does not model (linear attention, Mamba
layers, per-layer block configs, a vision tower, an unknown quantization) is listed in
`unsupported`: the plan then says "cannot predict" naming it, never guesses.

Checked against vLLM's own "Model loading took X GiB" lines in tests/unit/fixtures/vllm.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

GIB = 2**30
VOCAB_PADDING = 64
FP8_KV = frozenset({"fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc"})
FULL, SLIDING = "full_attention", "sliding_attention"
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "half": 2, "float32": 2, "float": 2, "auto": 2}
_UNQUANTIZED = frozenset({"", "none", "fp16", "bf16", "float16", "bfloat16", "auto"})
# config.json keys of shapes this model does not size (each names why, for "cannot predict")
_UNMODELLED_KEYS = {
    "block_configs": "per-layer block configs (Nemotron NAS)",
    "hybrid_override_pattern": "Mamba layers",
    "attn_layer_period": "Mamba layers",
    "layers_block_type": "Mamba layers",
    "full_attention_interval": "linear-attention layers",
    "linear_num_value_heads": "linear-attention layers",
    "num_kv_shared_layers": "layers sharing another layer's KV cache",
    "global_head_dim": "a head size that differs between layer kinds",
    "vision_config": "a vision tower (weights and encoder profiling)",
    "audio_config": "an audio tower",
}


# ---------------------------------------------------------------- quantization


@dataclass(frozen=True)
class Quantization:
    """How the quantized modules store their weights, and which modules the config exempts."""

    method: str = "none"
    bits: int = 16
    group_size: int = 0
    scale_bytes_per_weight: float = 0.0     # for schemes without groups: fp8 block or channel scales
    skip: tuple[str, ...] = ()              # substrings / globs: modules_to_not_convert and the like
    skip_exact: tuple[str, ...] = ()        # compressed-tensors `ignore` names
    skip_regex: tuple[str, ...] = ()        # compressed-tensors `ignore` "re:" patterns
    experts_only: bool = False              # MXFP4: only the MoE experts are quantized

    @property
    def is_quantized(self) -> bool:
        return self.bits < 16

    def bytes_per_weight(self) -> float:
        if not self.is_quantized:
            return 2.0
        packed = self.bits / 8
        if self.method == "mxfp4":
            return packed + 1 / 32                      # an e8m0 scale per 32 values
        if self.method == "bitsandbytes":
            return packed + self.scale_bytes_per_weight
        if self.group_size <= 0:
            return packed + self.scale_bytes_per_weight
        return packed + (2 + self.bits / 8) / self.group_size  # fp16 scale + packed zero per group

    def quantizes(self, names: Sequence[str], kind: str) -> bool:
        """Whether a module (its names in the usual checkpoint layouts) is stored quantized."""
        if not self.is_quantized or kind in ("embed", "lm_head", "router", "norm"):
            return False
        if self.experts_only and kind != "experts":
            return False
        return not any(self._skipped(name) for name in names)

    def _skipped(self, name: str) -> bool:
        if name in self.skip_exact or any(re.match(p, name) for p in self.skip_regex):
            return True
        return any(_glob_in(pattern, name) for pattern in self.skip)


def _glob_in(pattern: str, name: str) -> bool:
    """modules_to_not_convert semantics: a substring, where `*` stands for one dotted part."""
    if "*" not in pattern:
        return pattern in name
    regex = re.escape(pattern).replace(r"\*", r"[^.]+")
    return re.search(regex, name) is not None


NO_QUANT = Quantization()


def quantization_named(method: str | None) -> Quantization:
    """The usual layout of a method named by `--quantization` on an unquantized checkpoint."""
    name = (method or "none").lower()
    if name in _UNQUANTIZED:
        return NO_QUANT
    if name in {"gptq", "awq", "gptq_marlin", "awq_marlin", "int4", "marlin"}:
        return Quantization(name.split("_")[0], 4, 128)
    if name in {"fp8", "int8", "w8a8", "compressed-tensors", "fbgemm_fp8", "modelopt", "experts_int8"}:
        return Quantization(name, 8, 0)
    if name in {"bitsandbytes", "bnb"}:
        return Quantization("bitsandbytes", 4, 64, scale_bytes_per_weight=4 / 64)
    if name == "mxfp4":
        return Quantization("mxfp4", 4, 32, experts_only=True)
    raise ValueError(f"unknown quantization {method!r}: expected gptq, awq, fp8, int8, "
                     "bitsandbytes, mxfp4 or none")


def quantization_from_config(qc: Mapping[str, Any] | None) -> Quantization:
    """The checkpoint's own quantization_config, with what it leaves unquantized."""
    if not qc:
        return NO_QUANT
    method = str(qc.get("quant_method") or "unknown").lower()
    skip = tuple(str(s) for s in _listed(qc, "modules_to_not_convert", "llm_int8_skip_modules",
                                         "ignored_layers", "ignore_modules"))
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    if method in {"fp8", "fbgemm_fp8"}:
        block = qc.get("weight_block_size")
        scale = 4 / (block[0] * block[1]) if isinstance(block, list) and len(block) == 2 else 0.0
        return Quantization(method, 8, 0, scale_bytes_per_weight=scale, skip=skip)
    if method == "mxfp4":
        return Quantization("mxfp4", 4, 32, skip=skip, experts_only=True)
    if method == "bitsandbytes":
        return _bitsandbytes(qc, skip)
    if method in {"gptq", "awq", "marlin", "gptq_marlin", "awq_marlin"}:
        bits = int(qc.get("bits") or qc.get("w_bit") or qc.get("weight_bits") or 4)
        group = int(qc.get("group_size") or qc.get("q_group_size") or 0)
        return Quantization(method.split("_")[0], bits, max(group, 0), skip=skip)
    raise ValueError(f"quantization_config.quant_method {method!r} is not modelled")


def _listed(qc: Mapping[str, Any], *keys: str) -> list[Any]:
    out: list[Any] = []
    for key in keys:
        value = qc.get(key)
        if isinstance(value, list):
            out.extend(value)
    return out


def _compressed_tensors(qc: Mapping[str, Any]) -> Quantization:
    ignore = [str(s) for s in qc.get("ignore") or []]
    exact = tuple(s for s in ignore if not s.startswith("re:"))
    regex = tuple(s[3:] for s in ignore if s.startswith("re:"))
    for group in (qc.get("config_groups") or {}).values():
        weights = (group or {}).get("weights") or {}
        bits = int(weights.get("num_bits") or 8)
        strategy = str(weights.get("strategy") or "channel")
        size = int(weights.get("group_size") or 0) if strategy == "group" else 0
        scale = 4 / 16384 if strategy == "block" else 0.0
        return Quantization("compressed-tensors", bits, size, scale_bytes_per_weight=scale,
                            skip_exact=exact, skip_regex=regex)
    return Quantization("compressed-tensors", 8, 0, skip_exact=exact, skip_regex=regex)


def _bitsandbytes(qc: Mapping[str, Any], skip: tuple[str, ...]) -> Quantization:
    if qc.get("load_in_8bit"):
        return Quantization("bitsandbytes", 8, 0, skip=skip)
    double = bool(qc.get("bnb_4bit_use_double_quant"))
    absmax = 1 / 64 + 4 / (64 * 256) if double else 4 / 64   # per 64 weights: fp32, or 8-bit + fp32 per 256
    return Quantization("bitsandbytes", 4, 64, scale_bytes_per_weight=absmax, skip=skip)


# ---------------------------------------------------------------- the architecture


@dataclass(frozen=True)
class Mla:
    """Multi-head latent attention (DeepSeek V2/V3): the KV cache holds one compressed latent."""

    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int = 0

    @property
    def latent(self) -> int:
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


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
    first_k_dense: int = 0
    dtype_bytes: int = 2
    quant: Quantization = NO_QUANT
    source: str = ""
    layer_types: tuple[str, ...] = ()       # per layer FULL or SLIDING; () = all full attention
    sliding_window: int = 0
    kv_heads_per_layer: tuple[int, ...] = ()
    mla: Mla | None = None
    unsupported: tuple[str, ...] = ()        # config fields not modelled: "cannot predict"
    tensor_bytes: float | None = None        # the checkpoint's tensors, where known
    tensor_source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_hybrid(self) -> bool:
        return SLIDING in self.layer_types and FULL in self.layer_types

    def with_quantization(self, method: str | None) -> ModelArch:
        """The checkpoint's own quantization wins; `--quantization` only names it, or quantizes
        an unquantized checkpoint as it loads (then the checkpoint's tensor sizes no longer say
        what lands on the card)."""
        if self.quant.is_quantized or not method:
            return self
        return replace(self, quant=quantization_named(method), tensor_bytes=None, tensor_source="")

    def layer_kind(self, layer: int) -> str:
        return self.layer_types[layer] if self.layer_types else FULL

    # ---------------------------------------------------------------- parameters

    def padded_vocab(self) -> int:
        return math.ceil(self.vocab_size / VOCAB_PADDING) * VOCAB_PADDING

    def kv_heads(self, layer: int = 0) -> int:
        return self.kv_heads_per_layer[layer] if self.kv_heads_per_layer else self.num_key_value_heads

    def kv_heads_per_rank(self, tp: int = 1, layer: int = 0) -> int:
        return max(1, self.kv_heads(layer) // tp)

    def attention_params(self, tp: int = 1, layer: int = 0) -> dict[str, float]:
        """Per module kind, one layer's attention parameters on one rank."""
        if self.mla is not None:
            return {"attention": self._mla_params(tp)}
        q = self.hidden_size * self.num_attention_heads * self.head_dim
        kv = 2 * self.hidden_size * self.kv_heads_per_rank(tp, layer) * self.head_dim
        return {"attention": 2 * q / tp + kv}  # q and o split; k and v replicated when heads < tp

    def _mla_params(self, tp: int) -> float:
        m, h, heads = self.mla, self.hidden_size, self.num_attention_heads
        assert m is not None
        if m.q_lora_rank:
            q = h * m.q_lora_rank + m.q_lora_rank * heads * m.qk_head_dim / tp  # q_a replicated
        else:
            q = h * heads * m.qk_head_dim / tp
        kv_a = h * m.latent                                                    # replicated
        kv_b = m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim) / tp
        o = heads * m.v_head_dim * h / tp
        return q + kv_a + kv_b + o

    def mlp_params(self, tp: int = 1, layer: int = 0) -> dict[str, float]:
        h = self.hidden_size
        if not self.is_moe or layer < self.first_k_dense:
            return {"mlp": 3 * h * self.intermediate_size / tp}
        experts = self.num_experts * 3 * h * self.moe_width() / tp
        shared = 3 * h * self.shared_expert_intermediate_size / tp
        return {"experts": experts, "mlp": shared, "router": float(h * self.num_experts)}

    def moe_width(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    def router_params(self) -> int:
        return self.hidden_size * self.num_experts if self.is_moe else 0

    def embedding_params(self, tp: int = 1) -> float:
        copies = 1 if self.tie_word_embeddings else 2
        return copies * self.padded_vocab() * self.hidden_size / tp

    def parameters(self) -> float:
        """All parameters (one rank, no padding): the familiar "8B" figure."""
        layers = sum(sum(self._layer_params(1, i).values()) for i in range(self.num_hidden_layers))
        copies = 1 if self.tie_word_embeddings else 2
        return layers + copies * self.vocab_size * self.hidden_size

    def _layer_params(self, tp: int, layer: int) -> dict[str, float]:
        return {**self.attention_params(tp, layer), **self.mlp_params(tp, layer)}

    # ---------------------------------------------------------------- bytes

    def weights_bytes(self, tp: int = 1, layers: range | None = None, first: bool = True,
                      last: bool = True) -> float:
        """What vLLM reports as "Model loading took": the weights on one rank of one stage."""
        computed = self._computed_bytes(tp, layers, first, last)
        if self.tensor_bytes is None:
            return computed
        whole = self._computed_bytes(1, None, True, True)
        return computed * self.tensor_bytes / whole if whole else computed

    def _computed_bytes(self, tp: int, layers: range | None, first: bool, last: bool) -> float:
        span = layers if layers is not None else range(self.num_hidden_layers)
        total = sum(self._layer_bytes(tp, i) for i in span)
        vocab_rows = self.padded_vocab() * self.hidden_size / tp
        if first:
            total += vocab_rows * self.dtype_bytes
        if last and (not self.tie_word_embeddings or not first):
            total += vocab_rows * self.dtype_bytes
        rotary = self.max_position_embeddings * (self.mla.qk_rope_head_dim if self.mla else self.head_dim)
        return total + (self.hidden_size + rotary) * self.dtype_bytes

    def _layer_bytes(self, tp: int, layer: int) -> float:
        out = 2.0 * self.hidden_size * self.dtype_bytes                      # the two norms
        for kind, params in self._layer_params(tp, layer).items():
            quantized = self.quant.quantizes(_module_names(layer, kind), kind)
            out += params * (self.quant.bytes_per_weight() if quantized else self.dtype_bytes)
        return out

    def expert_padding_bytes(self, tp: int = 1, layers: range | None = None) -> float:
        """The most MXFP4 experts can grow on one rank when vLLM's MoE kernel pads them:
        Mxfp4MoEMethod.create_weights rounds the intermediate size (and with FlashInfer the
        hidden size) up to 64, 128 or 256 depending on the backend it picks for the card, which
        the plan cannot see; 0 for other checkpoints."""
        if self.quant.method != "mxfp4" or not self.is_moe:
            return 0.0
        width, hidden = self.moe_width() / tp, self.hidden_size
        grown = math.ceil(width / 256) * 256 * math.ceil(hidden / 256) * 256 / (width * hidden) - 1
        span = layers if layers is not None else range(self.num_hidden_layers)
        experts = sum(self.mlp_params(tp, i).get("experts", 0.0) for i in span)
        return experts * self.quant.bytes_per_weight() * grown

    def weights_gib(self, tp: int = 1) -> float:
        return self.weights_bytes(tp) / GIB

    # ---------------------------------------------------------------- KV cache

    def kv_layer_bytes(self, layer: int, kv_cache_dtype: str = "auto", tp: int = 1,
                       mla_native: bool = True) -> int:
        """One token's KV cache in one layer on one rank."""
        value = 1 if kv_cache_dtype.lower() in FP8_KV else self.dtype_bytes
        if self.mla is not None:
            if mla_native:
                return self.mla.latent * value
            heads = max(1, self.num_attention_heads // tp)     # before MLA kernels: K and V per head
            return 2 * heads * self.mla.qk_head_dim * value
        return 2 * self.kv_heads_per_rank(tp, layer) * self.head_dim * value

    def kv_bytes_per_token(self, kv_cache_dtype: str = "auto", tp: int = 1) -> int:
        """Every layer's KV for one token, all layers counted as full attention."""
        return sum(self.kv_layer_bytes(i, kv_cache_dtype, tp) for i in range(self.num_hidden_layers))


def _module_names(layer: int, kind: str) -> tuple[str, ...]:
    """A module's names in the common checkpoint layouts, for the quantization skip lists."""
    base = f"model.layers.{layer}"
    names = {
        "attention": (f"{base}.self_attn.q_proj", f"{base}.self_attn.o_proj", f"{base}.self_attn"),
        "mlp": (f"{base}.mlp.gate_proj", f"{base}.mlp.down_proj", f"{base}.mlp.shared_experts.gate_proj",
                f"{base}.mlp.shared_expert.gate_proj"),
        "experts": (f"{base}.mlp.experts.0.gate_proj", f"{base}.mlp.experts.gate_up_proj",
                    f"{base}.block_sparse_moe.experts.0.w1"),
        "router": (f"{base}.mlp.gate", f"{base}.mlp.router"),
    }
    return names.get(kind, (f"{base}.{kind}",))


# ---------------------------------------------------------------- config.json


def arch_from_config(config: Mapping[str, Any], source: str = "config.json") -> ModelArch:
    """A ModelArch from a Hugging Face config.json (text models; multimodal ones via text_config)."""
    cfg: Mapping[str, Any] = config.get("text_config") or config
    heads = _int(cfg, "num_attention_heads")
    hidden = _int(cfg, "hidden_size")
    layers = _int(cfg, "num_hidden_layers")
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
    unsupported = _unmodelled(config, cfg)
    quant, quant_problem = _quant_of(config, cfg)
    kv_heads, per_layer = _kv_heads(cfg, heads, layers)
    types, window, window_problem = _layer_kinds(cfg, layers)
    return ModelArch(
        hidden_size=hidden,
        intermediate_size=_int(cfg, "intermediate_size"),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        vocab_size=_int(cfg, "vocab_size"),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or cfg.get("seq_length") or 4096),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
        num_experts=experts,
        num_experts_per_tok=int(cfg.get("num_experts_per_tok") or 0) if experts else 0,
        moe_intermediate_size=int(cfg.get("moe_intermediate_size") or 0) if experts else 0,
        shared_expert_intermediate_size=_shared_width(cfg) if experts else 0,
        first_k_dense=int(cfg.get("first_k_dense_replace") or 0) if experts else 0,
        dtype_bytes=_DTYPE_BYTES.get(str(cfg.get("torch_dtype") or cfg.get("dtype") or "auto"), 2),
        quant=quant,
        source=source,
        layer_types=types,
        sliding_window=window,
        kv_heads_per_layer=per_layer,
        mla=_mla(cfg),
        unsupported=tuple(p for p in (*unsupported, quant_problem, window_problem) if p),
    )


def _unmodelled(config: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    keys = {**config, **cfg}
    return [f"{key}: {why}" for key, why in _UNMODELLED_KEYS.items() if keys.get(key) not in (None, [], {})]


def _quant_of(config: Mapping[str, Any], cfg: Mapping[str, Any]) -> tuple[Quantization, str]:
    qc = config.get("quantization_config") or cfg.get("quantization_config")
    try:
        return quantization_from_config(qc), ""
    except ValueError as exc:
        return NO_QUANT, str(exc)


def _shared_width(cfg: Mapping[str, Any]) -> int:
    if cfg.get("shared_expert_intermediate_size"):
        return int(cfg["shared_expert_intermediate_size"])
    shared = int(cfg.get("n_shared_experts") or 0)
    return shared * int(cfg.get("moe_intermediate_size") or 0)


def _kv_heads(cfg: Mapping[str, Any], heads: int, layers: int) -> tuple[int, tuple[int, ...]]:
    value = cfg.get("num_key_value_heads", cfg.get("num_kv_heads"))
    if isinstance(value, list):
        per_layer = tuple(int(v) for v in value)
        if len(per_layer) != layers or min(per_layer, default=0) <= 0:
            raise ValueError(f"num_key_value_heads lists {len(per_layer)} layers, the model has {layers}")
        return max(per_layer), per_layer
    return int(value or heads), ()


def _layer_kinds(cfg: Mapping[str, Any], layers: int) -> tuple[tuple[str, ...], int, str]:
    """Per-layer attention kinds, as transformers and vLLM read them from config.json."""
    window = int(cfg.get("sliding_window") or 0)
    listed = cfg.get("layer_types")
    if isinstance(listed, list) and listed:
        kinds = tuple(str(k) for k in listed)
        other = sorted(set(kinds) - {FULL, SLIDING})
        if other:
            return (), 0, f"layer_types: {', '.join(other)} layers are not modelled"
        if len(kinds) != layers:
            return (), 0, f"layer_types lists {len(kinds)} layers, num_hidden_layers says {layers}"
        return (kinds, window, "") if SLIDING in kinds else ((), 0, "")
    if not window or cfg.get("use_sliding_window") is False:
        return (), 0, ""
    pattern = int(cfg.get("sliding_window_pattern") or 0)
    if pattern:    # Gemma 3, Cohere 2: every pattern-th layer is global
        return tuple(FULL if (i + 1) % pattern == 0 else SLIDING for i in range(layers)), window, ""
    if str(cfg.get("model_type")) == "gemma2":   # alternating, the first layer local
        return tuple(SLIDING if i % 2 == 0 else FULL for i in range(layers)), window, ""
    if cfg.get("max_window_layers") is not None and cfg.get("use_sliding_window"):
        return (), 0, "use_sliding_window with max_window_layers is not modelled"
    return (), 0, f"sliding_window {window} on every layer is not modelled"


def _mla(cfg: Mapping[str, Any]) -> Mla | None:
    if not cfg.get("kv_lora_rank"):
        return None
    return Mla(kv_lora_rank=int(cfg["kv_lora_rank"]), qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 64),
               qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 128),
               v_head_dim=int(cfg.get("v_head_dim") or 128), q_lora_rank=int(cfg.get("q_lora_rank") or 0))


def _int(cfg: Mapping[str, Any], key: str) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value
