"""How vLLM sizes its KV cache at start-up, version by version: the model `swarm plan` uses.

vLLM loads the weights, profiles one dummy forward pass, and gives the KV cache whatever is
left of its share of the card (vllm/worker/worker.py determine_num_available_blocks in V0,
vllm/v1/worker/gpu_worker.py determine_available_memory in V1), on every worker of a
tensor/pipeline-parallel instance, and keeps the smallest count of blocks of them all:

    total     what CUDA reports for the card: nvidia-smi's total less ~450 MiB the driver
              keeps (RTX 3090 24576 MiB -> 23.58 GiB, A100 40960 -> 39.50, H100 81559 -> 79.18)
    budget    = gpu_memory_utilization x total
    kv        = budget - weights - activation peak - non-torch memory - CUDA-graph reserve
    tokens    = what that KV holds, counted as the engine counts it (below)

The activation peak is what the profiling run leaves at its high-water mark:

  V0 (before 0.8)  the forward pass over max_num_batched_tokens tokens,
                   T x 2 bytes x (3 x intermediate / TP + 3 x hidden); T = max(max_model_len,
                   2048), or 512 once max_model_len > 32768 switches chunked prefill on; from
                   0.6.5 the larger of that and the sampler's run (as V1's, 39 B per logit:
                   an RTX 4060 record peaks at 256 x 152,064 x 39 B = 1.42 GiB at 4K tokens).
  V1 (0.8 on)      the larger of that forward pass (T = max_num_batched_tokens: 2048 by default,
                   8192 from 0.9 on cards of 70 GiB and more other than A100) and the dummy
                   sampler run over max_num_seqs (256; 1024 on those big cards) requests:
                   N x vocab x bytes per logit: 12 where the engine samples with FlashInfer
                   (0.10), 39 with the PyTorch top-k/top-p sampler.

Non-torch memory is what the version counts of the memory outside PyTorch's allocator:
  device-wide    V0 0.6.4 and V1 before 0.9.2 subtract everything in use on the card beyond
                 PyTorch's tensors: the CUDA context and libraries, NCCL, *and other
                 processes* (a desktop on a consumer card): `context_gib`, and a wider band
                 on consumer cards;
  from a baseline  the others measure only what grows during profiling: `increase_gib`.
Tensor or pipeline parallelism adds NCCL and custom all-reduce buffers (`parallel_gib`).
V1 from 0.9.2 also refuses to start when the card's free memory at start-up is below its
share (the CUDA context, ~0.3-1.6 GiB, is already in use then): a utilization near 1.0 does
not start. CUDA graphs are captured after the KV cache is allocated, outside the budget: vLLM
estimates their memory (gpu_worker.py determine_available_memory) but takes the estimate from
the budget only with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1 (envs.py: "Disabled by default
to preserve existing behavior"; a 0.26 start logs 14.39 - 5.29 - 1.04 - 0.06 = 8.0 GiB of KV
with a 0.48 GiB graph estimate beside it).

Tokens, as the engine counts and checks them:
  V0, and V1 before 0.10   every layer as full attention (sliding-window layers too);
                 blocks = kv // (block_size x all layers' bytes per token); refuses when
                 max_model_len > blocks x block_size.
  V1 from 0.10   the hybrid KV cache manager: layers grouped by kind into groups of equal
                 size (the smaller kind's count, padding the last group), one block pool
                 shared by a layer of each group: blocks = kv // page // group_size, logged
                 as blocks // groups x block_size; a request needs only sliding_window - 1 +
                 max_num_batched_tokens tokens in a sliding layer, so concurrency and the
                 start check (every layer's need for one max_model_len request <= kv) count
                 that. From 0.20 the logged count changed formula: cannot predict that line.
  MLA            one latent (kv_lora_rank + qk_rope_head_dim) per layer and token on every
                 rank, from 0.7.1 (MLA kernels); before, K and V per head.

The model's constants (`Overheads`) are fitted leave-one-source-out on the recorded
start-ups in tests/unit/fixtures/vllm (`fit_overheads`); `margin_gib` is the widest miss
those fits left (`device_margin_gib` for the versions that count the whole card, whose
non-torch figure also holds the driver's context, larger on some cards: 0.35 GiB on an RTX
3090, 0.73 on an H200), so a verdict ("starts" / "refuses") is given only outside that band, and a
token figure only where the band is within 10% of it: elsewhere the plan says it cannot
predict, naming why.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from orchestrator.render.model_arch import FULL, GIB, SLIDING, ModelArch

MIB = 2**20
DRIVER_RESERVED_MIB = 450
V0_CHUNKED_ABOVE = 32768
V0_CHUNKED_TOKENS = 512
DEFAULT_BATCHED_TOKENS = 2048
LARGE_CARD_GIB = 70
CUDA_GRAPH_RESERVE_GIB = 0.5
TOKENS_WITHIN = 0.10
OLDEST_MODELLED = (0, 4, 0)
NEWEST: tuple[int, ...] = (999,)
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_CONSUMER = re.compile(r"geforce|titan|rtx\s*[2345]0\d0", re.IGNORECASE)


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
    in_use_mib: int | None = None     # other processes' memory on the card; None = unknown

    @property
    def in_use_gib(self) -> float:
        return (self.in_use_mib or 0) / 1024

    @property
    def in_use_unknown(self) -> bool:
        """Unknown and plausibly large: a GeForce card may drive a desktop."""
        return self.in_use_mib is None and self.is_consumer

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

    @property
    def is_consumer(self) -> bool:
        """A GeForce/Titan card: often drives a desktop, whose memory vLLM may count."""
        return _CONSUMER.search(self.name) is not None


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
    pipeline_parallel_size: int = 1
    enforce_eager: bool = False
    engine: str | None = None
    disable_hybrid_kv_cache_manager: bool = False
    estimate_cudagraphs: bool = False     # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1
    flashinfer_sampler: bool = True       # VLLM_USE_FLASHINFER_SAMPLER (0 = PyTorch's)

    @property
    def is_v1(self) -> bool:
        if self.engine:
            return self.engine.lower() == "v1"
        if self.pipeline_parallel_size > 1 and (0, 8) <= self.version < (0, 9):
            return False   # 0.8's V1 had no pipeline parallelism: the engine falls back to V0
        return self.version >= (0, 8)

    @property
    def workers(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


@dataclass(frozen=True)
class Overheads:
    """The few constants fitted on recorded start-ups (GiB); the rest is derived physics.

    The first four are `fit_overheads` of every record (a test keeps them equal to it); the
    last two are bounds from reports rather than fits: other processes' memory (the issue
    behind this model saw 1.8-3.6 GiB counted as non-torch on consumer cards and drivers),
    and what is in use before vLLM allocates (0.3 GiB of CUDA context up to the 1.54 GiB an
    H100 record shows free-memory-wise)."""

    context_gib: float = 0.363      # device-wide counting: CUDA context, libraries
    increase_gib: float = 0.127     # counted from a baseline: what grows during profiling
    parallel_gib: float = 0.286     # per worker of a TP/PP instance: NCCL, custom all-reduce
    margin_gib: float = 0.383       # the band around the KV budget: the widest miss of the fit
    device_margin_gib: float = 0.61   # ... for versions counting the whole card (its context too)
    display_gib: float = 3.30       # device-wide counting on a consumer card: other processes
    startup_used_gib: tuple[float, float] = (0.30, 1.00)  # in use on the card when vLLM starts


FITTED = Overheads()


# ---------------------------------------------------------------- from a command line

_VALUE_FLAGS = {
    "--max-model-len": "max_model_len", "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-num-seqs": "max_num_seqs", "--max-num-batched-tokens": "max_num_batched_tokens",
    "--kv-cache-dtype": "kv_cache_dtype", "--block-size": "block_size",
    "--tensor-parallel-size": "tensor_parallel_size", "-tp": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size", "-pp": "pipeline_parallel_size",
    "--quantization": "quantization", "-q": "quantization", "--model": "model",
}
_SWITCHES = {"--enforce-eager": "enforce_eager", "--enable-chunked-prefill": "enable_chunked_prefill",
             "--disable-hybrid-kv-cache-manager": "disable_hybrid_kv_cache_manager"}
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
        pipeline_parallel_size=_opt_int(args.get("pipeline_parallel_size")) or 1,
        enforce_eager=bool(args.get("enforce_eager")),
        engine=engine,
        disable_hybrid_kv_cache_manager=bool(args.get("disable_hybrid_kv_cache_manager")),
        estimate_cudagraphs=str(env.get("VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "0")) == "1",
        flashinfer_sampler=str(env.get("VLLM_USE_FLASHINFER_SAMPLER", "1")) != "0",
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
        return 39.0 if settings.version >= (0, 6, 5) else 0.0
    if (0, 10) <= settings.version < (0, 11) and settings.flashinfer_sampler:
        return 12.0  # FlashInfer top-k/top-p sampling
    return 39.0


def cuda_graph_reserve_gib(settings: VllmSettings) -> float:
    """The CUDA-graph estimate taken from the budget: only when the environment asks for it
    (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1; off by default in every release)."""
    if settings.is_v1 and settings.estimate_cudagraphs and not settings.enforce_eager:
        return CUDA_GRAPH_RESERVE_GIB
    return 0.0


def counts_device_wide(settings: VllmSettings) -> bool:
    """Whether the version subtracts all memory in use on the card, other processes' too:
    V0 0.6.4 (vllm#9352 made gpu_memory_utilization a limit for the whole card, vllm#10451;
    vllm#10511 undid it in 0.6.5; before, V0 counted only what grew since its own start) and
    V1 until vllm#19312 (0.9.2). Two instances sharing a card then count each other: the one
    that profiles second loses the other's share."""
    if settings.is_v1:
        return settings.version < (0, 9, 2)
    return (0, 6, 4) <= settings.version < (0, 6, 5)


def non_torch_gib(settings: VllmSettings, overheads: Overheads = FITTED, card: Card | None = None) -> float:
    base = overheads.increase_gib
    if counts_device_wide(settings):
        base = overheads.context_gib + (card.in_use_gib if card else 0.0)
    return base + (overheads.parallel_gib if settings.workers > 1 else 0.0)


def checks_free_memory(settings: VllmSettings) -> bool:
    """V1 from 0.9.2 (vllm#19312) refuses to start when the card's free memory is below its share."""
    return settings.is_v1 and settings.version >= (0, 9, 2)


# ---------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class StartupEstimate:
    """What vLLM will log at start-up for one instance (its most loaded worker), in GiB and
    tokens, with the band the fitted model cannot narrow and what it cannot predict."""

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
    margin_gib: float = 0.0
    tokens_low: int = 0
    tokens_high: int = 0
    concurrency: float = 0.0
    concurrency_low: float = 0.0
    concurrency_high: float = 0.0
    fits_low: bool = False           # one max_model_len request fits at the band's low end
    fits_high: bool = False          # ... at its high end
    refusal: str = ""                # a refusal that does not depend on the KV arithmetic
    doubts: tuple[str, ...] = ()     # why the verdict cannot be given
    token_doubts: tuple[str, ...] = ()     # why the token figure cannot be given
    cannot_predict: tuple[str, ...] = ()   # shapes not modelled at all: no figures
    cards: int = 1

    @property
    def overhead_gib(self) -> float:
        return self.activation_gib + self.non_torch_gib + self.cuda_graph_gib

    @property
    def max_concurrency(self) -> float:
        return self.concurrency

    @property
    def verdict(self) -> str:
        """"starts", "refuses" or "uncertain" (inside the model's band, or not modelled)."""
        if self.cannot_predict:
            return "uncertain"
        if self.refusal or not self.fits_high:
            return "refuses"
        if self.fits_low and not self.doubts:
            return "starts"
        return "uncertain"

    @property
    def starts(self) -> bool:
        return self.verdict == "starts"

    @property
    def refuses(self) -> bool:
        return self.verdict == "refuses"

    @property
    def predicts_tokens(self) -> bool:
        """Whether the token figure is within 10% of what vLLM will log, by the model's band."""
        if self.cannot_predict or self.refusal or not self.kv_cache_tokens:
            return False
        spread = max(self.tokens_high - self.kv_cache_tokens, self.kv_cache_tokens - self.tokens_low)
        return spread <= TOKENS_WITHIN * self.kv_cache_tokens and not self.token_doubts

    @property
    def sequence_gib(self) -> float:
        """KV cache one full-length sequence needs (every layer, as a fix must assume)."""
        return self.kv_bytes_per_token * self.max_model_len / GIB

    @property
    def capacity_tokens(self) -> int:
        """The tokens of context the pool holds at once: concurrency x max_model_len."""
        return int(self.concurrency * self.max_model_len)


@dataclass(frozen=True)
class Stage:
    """The layers, and the embeddings, one pipeline stage's workers hold."""

    layers: range
    first: bool
    last: bool


def stages(layers: int, pp: int) -> list[Stage]:
    """vLLM's get_pp_indices: equal shares, the remainder to the stages before the last."""
    sizes = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        sizes[-i] += 1
    out, start = [], 0
    for i, size in enumerate(sizes):
        out.append(Stage(range(start, start + size), i == 0, i == pp - 1))
        start += size
    return out


def activation_bytes(arch: ModelArch, settings: VllmSettings, tokens: int, seqs: int,
                     last_stage: bool = True) -> float:
    width = arch.intermediate_size
    if arch.is_moe:
        width = arch.num_experts_per_tok * arch.moe_width() + arch.shared_expert_intermediate_size
    tp = settings.tensor_parallel_size
    forward = tokens * 2 * (3 * width / tp + 3 * arch.hidden_size)
    if not last_stage:
        return forward
    sampler = min(seqs, tokens) * arch.padded_vocab() * sampler_bytes_per_logit(settings)
    return max(forward, sampler)


def estimate(arch: ModelArch, settings: VllmSettings, card: Card,
             overheads: Overheads = FITTED) -> StartupEstimate:
    """vLLM's start-up for one instance on `settings.workers` cards like `card`."""
    tokens, seqs = batch_defaults(settings, card)
    per_stage = [_stage_kv(arch, settings, card, s, tokens, seqs, overheads)
                 for s in stages(arch.num_hidden_layers, settings.pipeline_parallel_size)]
    worst = min(per_stage, key=lambda k: k.blocks(settings, 0.0))
    return worst.estimate(arch, settings, card, tokens, seqs, overheads)


@dataclass(frozen=True)
class _StageKv:
    """One stage's arithmetic: its budget split and how its KV pool is cut into blocks."""

    stage: Stage
    budget: float
    weights: float
    activation: float
    non_torch: float
    graphs: float
    layout: KvLayout

    @property
    def kv(self) -> float:
        return self.budget - self.weights - self.activation - self.non_torch - self.graphs

    def blocks(self, settings: VllmSettings, shift: float) -> int:
        return self.layout.blocks(self.kv + shift * GIB)

    def estimate(self, arch: ModelArch, settings: VllmSettings, card: Card, tokens: int, seqs: int,
                 overheads: Overheads) -> StartupEstimate:
        low_shift, high_shift = _band(settings, card, overheads)
        low_shift -= arch.expert_padding_bytes(settings.tensor_parallel_size, self.stage.layers) / GIB
        lay, kv = self.layout, self.kv
        low, high = kv + low_shift * GIB, kv + high_shift * GIB
        return StartupEstimate(
            engine="V1" if settings.is_v1 else "V0", version=version_text(settings.version),
            batched_tokens=tokens, num_seqs=seqs, total_gib=card.total_gib, budget_gib=self.budget / GIB,
            utilization=settings.gpu_memory_utilization, weights_gib=self.weights / GIB,
            activation_gib=self.activation / GIB, non_torch_gib=self.non_torch / GIB,
            cuda_graph_gib=self.graphs / GIB, kv_gib=kv / GIB, kv_bytes_per_token=lay.full_bytes_per_token,
            kv_cache_tokens=lay.logged_tokens(kv), max_model_len=settings.max_model_len,
            margin_gib=high_shift, tokens_low=lay.logged_tokens(low), tokens_high=lay.logged_tokens(high),
            concurrency=lay.concurrency(kv), concurrency_low=lay.concurrency(low),
            concurrency_high=lay.concurrency(high), fits_low=lay.fits(low), fits_high=lay.fits(high),
            refusal=_free_memory_refusal(settings, card, overheads),
            doubts=tuple(_headroom_doubts(settings, card, overheads)), token_doubts=lay.doubts,
            cannot_predict=_cannot_predict(arch, settings), cards=settings.workers,
        )


def _stage_kv(arch: ModelArch, settings: VllmSettings, card: Card, stage: Stage, tokens: int, seqs: int,
              overheads: Overheads) -> _StageKv:
    tp = settings.tensor_parallel_size
    return _StageKv(
        stage=stage,
        budget=settings.gpu_memory_utilization * card.total_bytes,
        weights=arch.weights_bytes(tp, stage.layers, stage.first, stage.last),
        activation=activation_bytes(arch, settings, tokens, seqs, stage.last),
        non_torch=non_torch_gib(settings, overheads, card) * GIB,
        graphs=cuda_graph_reserve_gib(settings) * GIB,
        layout=kv_layout(arch, settings, stage.layers, tokens),
    )


def _band(settings: VllmSettings, card: Card, overheads: Overheads) -> tuple[float, float]:
    """(low, high) shifts of the KV budget, GiB: the fits' widest miss, and a desktop's share
    on a consumer card where the version counts other processes' memory."""
    margin = overheads.device_margin_gib if counts_device_wide(settings) else overheads.margin_gib
    low = -margin
    if counts_device_wide(settings) and card.in_use_unknown:
        low -= overheads.display_gib
    return low, margin


def _free_memory_refusal(settings: VllmSettings, card: Card, overheads: Overheads) -> str:
    if not checks_free_memory(settings):
        return ""
    least_used = overheads.startup_used_gib[0] + card.in_use_gib
    free = card.total_gib - least_used
    want = settings.gpu_memory_utilization * card.total_gib
    if want <= free:
        return ""
    return (f"vLLM {version_text(settings.version)} refuses to start when the card's free memory is "
            f"below its share: {settings.gpu_memory_utilization:g} x {card.total_gib:.2f} GiB = {want:.2f} GiB, "
            f"but at least {least_used:.2f} GiB is in use before it allocates anything")


def outside_need_gib(settings: VllmSettings, card: Card, overheads: Overheads = FITTED,
                     cautious: bool = False) -> float:
    """What must fit beside the budget: memory in use at start-up (the CUDA context, other
    processes) where the version does not count it inside, and, until vLLM reserves them
    inside the budget, the CUDA graphs it captures after the KV cache is allocated. The
    typical figure, or with `cautious` the most the reports show (what fixes leave free)."""
    used = overheads.startup_used_gib[1 if cautious else 0] + card.in_use_gib
    need = 0.0 if counts_device_wide(settings) else used
    if not settings.enforce_eager and not cuda_graph_reserve_gib(settings):
        need += CUDA_GRAPH_RESERVE_GIB * (2 if settings.workers > 1 else 1)
    return need


def max_safe_utilization(settings: VllmSettings, card: Card, overheads: Overheads = FITTED) -> float:
    """The largest utilization (two decimals) that leaves the cautious outside need free."""
    free = card.total_gib - outside_need_gib(settings, card, overheads, cautious=True)
    return max(0.0, math.floor(free / card.total_gib * 100) / 100)


def _headroom_doubts(settings: VllmSettings, card: Card, overheads: Overheads) -> list[str]:
    outside = card.total_gib * (1 - settings.gpu_memory_utilization)
    need = outside_need_gib(settings, card, overheads)
    if outside >= need:
        return []
    return [f"only {outside:.2f} GiB of the card is left outside gpu_memory_utilization "
            f"{settings.gpu_memory_utilization:g}, where {need:.2f} GiB is typically needed (memory in use "
            "at start-up, CUDA graphs captured after the KV cache): it may not start"]


def _cannot_predict(arch: ModelArch, settings: VllmSettings) -> tuple[str, ...]:
    out = list(arch.unsupported)
    if settings.version < OLDEST_MODELLED:
        out.append(f"vLLM {version_text(settings.version)}: versions before "
                   f"{version_text(OLDEST_MODELLED)} measured their overheads differently (not modelled)")
    if arch.kv_heads_per_layer and len(set(arch.kv_heads_per_layer)) > 1 and not (
            settings.is_v1 and settings.version >= (0, 11)):
        out.append("num_key_value_heads per layer: this vLLM version sizes every layer alike")
    if arch.mla is not None and settings.kv_cache_dtype.lower() not in ("auto", "bfloat16", "float16") \
            and settings.version < (0, 8):
        out.append("kv_cache_dtype with MLA before vLLM 0.8")
    return tuple(out)


# ---------------------------------------------------------------- how the KV pool is counted


@dataclass(frozen=True)
class KvLayout:
    """How one worker's KV memory turns into blocks, the logged token count, concurrency and
    the start check, for the version's KV cache manager."""

    block_size: int
    max_model_len: int
    page_layers: tuple[int, ...]      # bytes per block of each layer, in groups order (flattened)
    group_size: int                   # layers per group (1 group of all layers when uniform)
    groups: tuple[tuple[str, int], ...]   # (kind, layers) per group, padding included
    layer_need: int                   # bytes one max_model_len request needs in every layer
    full_bytes_per_token: int
    hybrid: bool = False
    logged_formula: str = "blocks"    # "blocks", "per-group", or "unknown"
    window_tokens: int = 0

    @property
    def doubts(self) -> tuple[str, ...]:
        if self.logged_formula == "unknown":
            return ("the logged \"GPU KV cache size\" of hybrid models changed formula in vLLM 0.20: "
                    "the token figure is not predicted (concurrency is)",)
        return ()

    def blocks(self, kv: float) -> int:
        if kv <= 0:
            return 0
        if not self.hybrid:
            return int(kv // sum(self.page_layers))
        page = self.page_layers[0]
        return int(kv // page // self.group_size)

    def fits(self, kv: float) -> bool:
        """The engine's start check: one max_model_len request fits the pool."""
        if self.hybrid:
            return 0 < self.layer_need <= kv
        return self.blocks(kv) * self.block_size >= self.max_model_len

    def logged_tokens(self, kv: float) -> int:
        blocks = self.blocks(kv)
        if self.hybrid:
            return blocks // len(self.groups) * self.block_size
        return blocks * self.block_size

    def concurrency(self, kv: float) -> float:
        blocks = self.blocks(kv)
        if not self.hybrid:
            return blocks * self.block_size / self.max_model_len
        per_block = self.page_layers[0] * self.group_size
        per_request = self.group_size * sum(self._group_need(kind) for kind, _ in self.groups)
        return blocks / math.ceil(per_request / per_block)

    def _group_need(self, kind: str) -> int:
        tokens = self.max_model_len if kind == FULL else min(self.window_tokens, self.max_model_len)
        extra = 1 if kind == SLIDING else 0
        return (math.ceil(tokens / self.block_size) + extra) * self.page_layers[0]


def kv_layout(arch: ModelArch, settings: VllmSettings, layers: range, batched_tokens: int) -> KvLayout:
    tp, dtype, block = settings.tensor_parallel_size, settings.kv_cache_dtype, settings.block_size
    native = settings.version >= (0, 7, 1)
    per_layer = [arch.kv_layer_bytes(i, dtype, tp, native) for i in layers]
    full_per_token = sum(per_layer)
    need = math.ceil(settings.max_model_len / block) * block * full_per_token
    kinds = [arch.layer_kind(i) for i in layers]
    if not _hybrid_manager(arch, settings) or SLIDING not in kinds or FULL not in kinds:
        return KvLayout(block, settings.max_model_len, tuple(p * block for p in per_layer), len(per_layer),
                        ((FULL, len(per_layer)),), need, full_per_token)
    return _hybrid_layout(arch, settings, kinds, per_layer, batched_tokens)


def _hybrid_manager(arch: ModelArch, settings: VllmSettings) -> bool:
    return (settings.is_v1 and settings.version >= (0, 10) and arch.is_hybrid
            and not settings.disable_hybrid_kv_cache_manager)


def _hybrid_layout(arch: ModelArch, settings: VllmSettings, kinds: list[str], per_layer: list[int],
                   batched_tokens: int) -> KvLayout:
    """vLLM's _get_kv_cache_groups_uniform_page_size: groups of equal size per kind."""
    block = settings.block_size
    counts = {kind: kinds.count(kind) for kind in (FULL, SLIDING)}
    group_size = min(counts.values())
    if max(counts.values()) < group_size * 1.5:
        group_size = max(counts.values())
    groups = tuple((kind, group_size) for kind, n in counts.items() for _ in range(math.ceil(n / group_size)))
    page = per_layer[0] * block
    window = arch.sliding_window - 1 + batched_tokens
    layout = KvLayout(block, settings.max_model_len, (page,), group_size, groups, 0, sum(per_layer),
                      hybrid=True, logged_formula="per-group" if settings.version < (0, 20) else "unknown",
                      window_tokens=window)
    need = sum(layout._group_need(kind) for kind in kinds)
    return replace(layout, layer_need=need)


# ---------------------------------------------------------------- what would start instead


def longest_context(arch: ModelArch, settings: VllmSettings, card: Card, step: int = 256,
                    overheads: Overheads = FITTED) -> int:
    """The largest max_model_len (a multiple of `step`, at most the current one) that the
    model says starts, margin included."""
    length = settings.max_model_len // step * step
    while length >= step:
        if estimate(arch, replace(settings, max_model_len=length), card, overheads).starts:
            return length
        length -= step
    return 0


def utilization_needed(arch: ModelArch, settings: VllmSettings, card: Card,
                       overheads: Overheads = FITTED) -> float:
    """The smallest gpu_memory_utilization (two decimals) at which the model says it starts,
    margin included; above 1.0 when none does."""
    util = 0.05
    while util <= 1.0:
        if estimate(arch, replace(settings, gpu_memory_utilization=util), card, overheads).starts:
            return util
        util = round(util + 0.01, 2)
    return 1.01


# ---------------------------------------------------------------- fitting the constants


@dataclass(frozen=True)
class Observation:
    """One recorded start-up: the inputs, the KV GiB vLLM logged, and where it came from."""

    arch: ModelArch
    settings: VllmSettings
    card: Card
    logged_kv_gib: float
    source: str
    name: str = ""


@dataclass(frozen=True)
class Fit:
    overheads: Overheads
    residuals: dict[str, float] = field(default_factory=dict)


def needed_non_torch(obs: Observation) -> float:
    """The non-torch GiB that would make the model land exactly on the logged KV GiB."""
    zero = replace(FITTED, context_gib=0.0, increase_gib=0.0, parallel_gib=0.0)
    return estimate(obs.arch, obs.settings, obs.card, zero).kv_gib - obs.logged_kv_gib


def fit_overheads(observations: Iterable[Observation], base: Overheads = FITTED) -> Fit:
    """Constants from recorded start-ups: the median non-torch need per counting family,
    the median extra with more than one worker, and as margin the widest miss left."""
    obs = [o for o in observations if o.settings.version >= OLDEST_MODELLED]
    need = {o.name: needed_non_torch(o) for o in obs}
    single = [o for o in obs if o.settings.workers == 1]
    device = [need[o.name] for o in single if counts_device_wide(o.settings)]
    baseline = [need[o.name] for o in single if not counts_device_wide(o.settings)]
    context = _median(device, base.context_gib)
    increase = _median(baseline, base.increase_gib)
    parallel_need = [need[o.name] - (context if counts_device_wide(o.settings) else increase)
                     for o in obs if o.settings.workers > 1]
    fitted = replace(base, context_gib=round(context, 3), increase_gib=round(increase, 3),
                     parallel_gib=round(_median(parallel_need, base.parallel_gib), 3))
    residuals = {o.name: _unexplained(o, estimate(o.arch, o.settings, o.card, fitted).kv_gib - o.logged_kv_gib)
                 for o in obs}
    return Fit(replace(fitted, margin_gib=_widest(obs, residuals, False, base.margin_gib),
                       device_margin_gib=_widest(obs, residuals, True, base.device_margin_gib)), residuals)


def _unexplained(obs: Observation, residual: float) -> float:
    """A miss less what the shape's own known band already allows (MXFP4 expert padding
    makes the KV smaller than computed, never larger): the margin is for what nothing explains."""
    padding = obs.arch.expert_padding_bytes(obs.settings.tensor_parallel_size) / GIB
    return max(0.0, residual - padding) if residual > 0 else residual


def _widest(obs: list[Observation], residuals: dict[str, float], device_wide: bool, default: float) -> float:
    misses = [abs(residuals[o.name]) for o in obs if counts_device_wide(o.settings) == device_wide]
    return round(max(max(misses, default=default), 0.05), 3)


def _median(values: list[float], default: float) -> float:
    return statistics.median(values) if values else default
