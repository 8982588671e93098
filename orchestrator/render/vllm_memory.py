"""How vLLM sizes its KV cache at start-up, version by version: the model `swarm plan` uses.

vLLM loads the weights, profiles one dummy forward pass, and gives the KV cache whatever is
left of its share of the card (vllm/worker/worker.py determine_num_available_blocks in V0,
vllm/v1/worker/gpu_worker.py determine_available_memory in V1):

    total     what CUDA reports for the card: nvidia-smi's total less ~450 MiB the driver
              keeps (RTX 3090 24576 MiB -> 23.58 GiB, A100 40960 -> 39.50, H100 81559 -> 79.18)
    budget    = gpu_memory_utilization x total
    kv        = budget - weights - activation peak - non-torch memory - CUDA-graph reserve
    tokens    = floor(kv / (block_size x KV bytes per token)) x block_size
    max_concurrency = tokens / max_model_len; below 1.0 vLLM refuses to start.

The activation peak is what the profiling run leaves at its high-water mark:

  V0 (before 0.8)  the forward pass over max_num_batched_tokens tokens,
                   T x 2 bytes x (3 x intermediate + 3 x hidden); T = max(max_model_len, 2048),
                   or 512 once max_model_len > 32768 switches chunked prefill on (so a 29K
                   context can fail where 35K starts, vllm#10517). The sampler adds nothing.
  V1 (0.8 on)      the larger of that forward pass (T = max_num_batched_tokens: 2048 by default,
                   8192 from 0.9 on cards of 70 GiB and more other than A100) and the dummy
                   sampler run over max_num_seqs (256; 1024 on those big cards) requests:
                   N x vocab x bytes per logit: 12 where the engine samples with FlashInfer
                   (0.10 logs "Using FlashInfer for top-p & top-k sampling"), 39 with the
                   PyTorch top-k/top-p sampler (sort values and indices, softmax, cumsum, masks).

Non-torch memory (cuBLAS workspaces, NCCL) is 0.25 GiB, 0.4 GiB more with tensor
parallelism. CUDA graphs are captured after the KV cache is allocated, outside the budget,
until 0.21 made vLLM reserve its estimate inside it (0.5 GiB here).

Each constant was read off recorded start-up logs (tests/unit/fixtures/vllm, which names the
case behind every figure); the tests there hold the model to 10% of vLLM's own token count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from orchestrator.render.model_arch import GIB, ModelArch

MIB = 2**20
DRIVER_RESERVED_MIB = 450
NON_TORCH_GIB = 0.25
NON_TORCH_TP_GIB = 0.40
CUDA_GRAPH_RESERVE_GIB = 0.5
V0_CHUNKED_ABOVE = 32768
V0_CHUNKED_TOKENS = 512
DEFAULT_BATCHED_TOKENS = 2048
LARGE_CARD_GIB = 70
NEWEST: tuple[int, ...] = (999,)
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(tag: str | None) -> tuple[int, ...]:
    """`v0.6.3` -> (0, 6, 3); `latest`, `nightly` or nothing -> the newest behaviour modelled."""
    match = _VERSION_RE.search(tag or "")
    if not match:
        return NEWEST
    return tuple(int(g) for g in match.groups() if g is not None)


def version_text(version: tuple[int, ...]) -> str:
    return "newest" if version == NEWEST else ".".join(str(v) for v in version)


@dataclass(frozen=True)
class Card:
    """One GPU as the plan sees it; `cuda_total_bytes` when a log recorded it."""

    name: str
    vram_mib: int
    cuda_total_bytes: int | None = None

    @property
    def total_bytes(self) -> int:
        if self.cuda_total_bytes is not None:
            return self.cuda_total_bytes
        return max(0, self.vram_mib - DRIVER_RESERVED_MIB) * MIB

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    @property
    def is_large(self) -> bool:
        """vLLM's test for its bigger batch defaults: >= 70 GiB and not an A100."""
        return self.total_bytes >= LARGE_CARD_GIB * GIB and "a100" not in self.name.lower()


@dataclass(frozen=True)
class VllmSettings:
    """The engine arguments that move the numbers; None means vLLM's default for the version."""

    version: tuple[int, ...]
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_dtype: str = "auto"
    block_size: int = 16
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    engine: str | None = None

    @property
    def is_v1(self) -> bool:
        if self.engine:
            return self.engine.lower() == "v1"
        return self.version >= (0, 8)


@dataclass(frozen=True)
class StartupEstimate:
    """What vLLM will log at start-up for one instance, in GiB and tokens."""

    engine: str
    version: str
    batched_tokens: int
    num_seqs: int
    total_gib: float
    budget_gib: float
    utilization: float
    weights_gib: float
    activation_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    kv_gib: float
    kv_bytes_per_token: int
    kv_cache_tokens: int
    max_model_len: int

    @property
    def overhead_gib(self) -> float:
        return self.activation_gib + self.non_torch_gib + self.cuda_graph_gib

    @property
    def max_concurrency(self) -> float:
        return self.kv_cache_tokens / self.max_model_len

    @property
    def starts(self) -> bool:
        return self.kv_gib > 0 and self.kv_cache_tokens >= self.max_model_len

    @property
    def sequence_gib(self) -> float:
        """KV cache one full-length sequence needs."""
        return self.kv_bytes_per_token * self.max_model_len / GIB


# ---------------------------------------------------------------- from a command line

_VALUE_FLAGS = {
    "--max-model-len": "max_model_len", "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-num-seqs": "max_num_seqs", "--max-num-batched-tokens": "max_num_batched_tokens",
    "--kv-cache-dtype": "kv_cache_dtype", "--block-size": "block_size",
    "--tensor-parallel-size": "tensor_parallel_size", "-tp": "tensor_parallel_size",
    "--quantization": "quantization", "-q": "quantization", "--model": "model",
}
_SWITCHES = {"--enforce-eager": "enforce_eager", "--enable-chunked-prefill": "enable_chunked_prefill"}
DEFAULT_UTILIZATION = 0.9


def engine_args(argv: Sequence[str]) -> dict[str, str | bool]:
    """The arguments of `vllm serve` / the OpenAI server that move the memory arithmetic."""
    out: dict[str, str | bool] = {}
    items = [str(a) for a in argv]
    for i, item in enumerate(items):
        flag, eq, inline = item.partition("=")
        key = flag.replace("_", "-") if flag.startswith("--") else flag
        if key in _SWITCHES:
            out[_SWITCHES[key]] = True
        elif key in _VALUE_FLAGS:
            value = inline if eq else (items[i + 1] if i + 1 < len(items) else "")
            out[_VALUE_FLAGS[key]] = value
    return out


def settings_from_args(args: Mapping[str, str | bool], version: tuple[int, ...],
                       model_max_len: int, environ: Mapping[str, str] | None = None) -> VllmSettings:
    """VllmSettings for what the container will actually run (absent flags: vLLM's defaults)."""
    env = environ or {}
    engine = {"0": "v0", "1": "v1"}.get(str(env.get("VLLM_USE_V1", "")))
    chunked = bool(args.get("enable_chunked_prefill"))
    batched = _opt_int(args.get("max_num_batched_tokens"))
    if chunked and batched is None and not (engine == "v1" or (engine is None and version >= (0, 8))):
        batched = V0_CHUNKED_TOKENS
    return VllmSettings(
        version=version,
        gpu_memory_utilization=float(str(args.get("gpu_memory_utilization") or DEFAULT_UTILIZATION)),
        max_model_len=_opt_int(args.get("max_model_len")) or model_max_len,
        max_num_seqs=_opt_int(args.get("max_num_seqs")),
        max_num_batched_tokens=batched,
        kv_cache_dtype=str(args.get("kv_cache_dtype") or "auto"),
        block_size=_opt_int(args.get("block_size")) or 16,
        tensor_parallel_size=_opt_int(args.get("tensor_parallel_size")) or 1,
        enforce_eager=bool(args.get("enforce_eager")),
        engine=engine,
    )


def _opt_int(value: str | bool | None) -> int | None:
    if value in (None, "", True, False):
        return None
    return int(str(value))


# ---------------------------------------------------------------- defaults per version


def batch_defaults(settings: VllmSettings, card: Card) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) the engine will profile with."""
    if not settings.is_v1:
        return _v0_batched_tokens(settings), settings.max_num_seqs or 256
    large = card.is_large and settings.version >= (0, 9)
    tokens = settings.max_num_batched_tokens or (8192 if large else DEFAULT_BATCHED_TOKENS)
    seqs = settings.max_num_seqs or (1024 if large else 256)
    return tokens, seqs


def _v0_batched_tokens(settings: VllmSettings) -> int:
    if settings.max_num_batched_tokens:
        return settings.max_num_batched_tokens
    if settings.max_model_len > V0_CHUNKED_ABOVE:
        return V0_CHUNKED_TOKENS
    return max(settings.max_model_len, DEFAULT_BATCHED_TOKENS)


def sampler_bytes_per_logit(settings: VllmSettings) -> float:
    if not settings.is_v1:
        return 0.0
    if (0, 10) <= settings.version < (0, 11):
        return 12.0  # FlashInfer top-k/top-p sampling
    return 39.0


def cuda_graph_reserve_gib(settings: VllmSettings) -> float:
    if settings.is_v1 and settings.version >= (0, 21) and not settings.enforce_eager:
        return CUDA_GRAPH_RESERVE_GIB
    return 0.0


def non_torch_gib(settings: VllmSettings) -> float:
    return NON_TORCH_GIB + (NON_TORCH_TP_GIB if settings.tensor_parallel_size > 1 else 0.0)


# ---------------------------------------------------------------- the estimate


def activation_bytes(arch: ModelArch, settings: VllmSettings, tokens: int, seqs: int) -> float:
    width = arch.intermediate_size
    if arch.is_moe:
        width = arch.num_experts_per_tok * arch.moe_width() + arch.shared_expert_intermediate_size
    tp = settings.tensor_parallel_size
    forward = tokens * 2 * (3 * width / tp + 3 * arch.hidden_size)
    sampler = min(seqs, tokens) * arch.padded_vocab() * sampler_bytes_per_logit(settings)
    return max(forward, sampler)


def estimate(arch: ModelArch, settings: VllmSettings, card: Card) -> StartupEstimate:
    tokens, seqs = batch_defaults(settings, card)
    tp = settings.tensor_parallel_size
    total = card.total_bytes
    budget = settings.gpu_memory_utilization * total
    weights = arch.weights_bytes(tp)
    activation = activation_bytes(arch, settings, tokens, seqs)
    non_torch = non_torch_gib(settings) * GIB
    graphs = cuda_graph_reserve_gib(settings) * GIB
    kv = budget - weights - activation - non_torch - graphs
    per_token = arch.kv_bytes_per_token(settings.kv_cache_dtype, tp)
    blocks = max(0, math.floor(kv / (settings.block_size * per_token)))
    return StartupEstimate(
        engine="V1" if settings.is_v1 else "V0", version=version_text(settings.version),
        batched_tokens=tokens, num_seqs=seqs, total_gib=total / GIB, budget_gib=budget / GIB,
        utilization=settings.gpu_memory_utilization, weights_gib=weights / GIB,
        activation_gib=activation / GIB, non_torch_gib=non_torch / GIB, cuda_graph_gib=graphs / GIB,
        kv_gib=kv / GIB, kv_bytes_per_token=per_token, kv_cache_tokens=blocks * settings.block_size,
        max_model_len=settings.max_model_len,
    )


# ---------------------------------------------------------------- what would start instead


def longest_context(arch: ModelArch, settings: VllmSettings, card: Card, step: int = 256) -> int:
    """The largest max_model_len (a multiple of `step`, at most the current one) that starts."""
    length = settings.max_model_len // step * step
    while length >= step:
        if estimate(arch, replace(settings, max_model_len=length), card).starts:
            return length
        length -= step
    return 0


def utilization_needed(arch: ModelArch, settings: VllmSettings, card: Card) -> float:
    """The smallest gpu_memory_utilization (two decimals) at which one full sequence fits."""
    base = estimate(arch, settings, card)
    blocks = math.ceil(settings.max_model_len / settings.block_size)
    need = base.weights_gib + base.overhead_gib + blocks * settings.block_size * base.kv_bytes_per_token / GIB
    util = math.ceil(need / base.total_gib * 100) / 100
    while util <= 1.0 and not estimate(arch, replace(settings, gpu_memory_utilization=util), card).starts:
        util = round(util + 0.01, 2)
    return util
