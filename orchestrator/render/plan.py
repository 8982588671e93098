"""Plan: what a phase will run where, and whether it fits: ports, RAM and GPU memory.

Every vLLM instance is sized the way vLLM itself sizes it at start-up (render/vllm_memory.py,
held to published start-up logs), from the engine arguments of its rendered command line and
the vLLM version of its image, on every card it uses: a tensor- or pipeline-parallel instance
(`gpu: "0,1"` with `tensor_parallel_size: 2`) books each of its cards, so no other instance
is accepted on a card it fills. Its share of each card, gpu_memory_utilization x total, less
the weights (from the model's config.json, render/model_arch.py), the activation peak of the
profiling run and runtime overheads, is its KV cache. The plan reports per instance the
weights, overhead, KV budget, `kv_cache_tokens` and `max_concurrency` at max_model_len, and
refuses (exit 2) where vLLM would refuse to start, with the cheapest fixes, each re-planned
with the model's margin (a fix that would itself not start is never offered). Where the
model cannot tell (a shape it does not model, or inside its margin) the plan says "cannot
predict" and why, as a warning: it never guesses a verdict.

The model's figures come from the staged weights' config.json, else a Hugging Face cache,
else roles/vllm/models.yml (render/hf_config.py); the plan says which. The utilization
fractions of all instances sharing one card must sum to at most 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import Field

from orchestrator.config.inventory import Node
from orchestrator.config.models import Model
from orchestrator.config.project import Project
from orchestrator.config.yamlfile import load_yaml, validate
from orchestrator.errors import PlanError
from orchestrator.render.hf_config import cache_roots, find_config, load_arch, mirror_roots
from orchestrator.render.model_arch import FP8_KV, ModelArch, arch_from_config
from orchestrator.render.services import Service, build_services
from orchestrator.render.vllm_memory import (
    Card,
    StartupEstimate,
    VllmSettings,
    counts_device_wide,
    engine_args,
    estimate,
    longest_context,
    max_safe_utilization,
    parse_version,
    settings_from_args,
    utilization_needed,
)

RAM_RESERVE_GB = 2.0
CATALOG = "roles/vllm/models.yml"


class ModelFacts(Model):
    """One catalog entry: the config.json figures vLLM builds the model from, and their source."""

    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int | None = Field(None, gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    tie_word_embeddings: bool = False
    model_type: str | None = None
    num_experts: int = Field(0, ge=0)
    num_experts_per_tok: int = Field(0, ge=0)
    moe_intermediate_size: int = Field(0, ge=0)
    shared_expert_intermediate_size: int = Field(0, ge=0)
    n_shared_experts: int = Field(0, ge=0)
    first_k_dense_replace: int = Field(0, ge=0)
    kv_lora_rank: int | None = Field(None, gt=0)
    qk_rope_head_dim: int | None = Field(None, gt=0)
    qk_nope_head_dim: int | None = Field(None, gt=0)
    v_head_dim: int | None = Field(None, gt=0)
    q_lora_rank: int | None = Field(None, gt=0)
    sliding_window: int | None = Field(None, gt=0)
    sliding_window_pattern: int | None = Field(None, gt=0)
    layer_types: list[str] | None = None
    quantization: str | None = None
    bits: int | None = Field(None, gt=0, le=16)
    group_size: int | None = Field(None, ge=0)
    quantization_config: dict[str, Any] | None = None
    native_context: int | None = Field(None, gt=0)
    source: str
    quantization_source: str | None = None
    context_source: str | None = None
    revision: str | None = None   # the commit swarm stages (render/weights.py, docs/models.md)

    def arch(self) -> ModelArch:
        """The same ModelArch vLLM's config.json would give: the entry is read as one."""
        config = self.model_dump(exclude_none=True, exclude={
            "quantization", "bits", "group_size", "native_context", "source", "quantization_source",
            "context_source"})
        if self.num_experts:
            config["num_local_experts"] = self.num_experts
        if self.quantization and not self.quantization_config:
            config["quantization_config"] = self._quant_config()
        return arch_from_config(config, self.source)

    def _quant_config(self) -> dict[str, Any]:
        method = str(self.quantization).lower().split("_")[0]
        if method in ("gptq", "awq"):
            return {"quant_method": method, "bits": self.bits or 4,
                    "group_size": 128 if self.group_size is None else self.group_size}
        return {"quant_method": method}

    @property
    def context(self) -> int:
        return self.native_context or self.max_position_embeddings


class Catalog(Model):
    models: dict[str, ModelFacts]


def load_catalog(project: Project) -> Catalog:
    role = project.roles.get("vllm")
    path = (role.dir if role else project.roles_dir / "vllm") / "models.yml"
    if not path.is_file():
        return Catalog(models={})
    return validate(Catalog, load_yaml(path, what="model catalog"), "model catalog")


@dataclass(frozen=True)
class ResolvedModel:
    arch: ModelArch
    native_context: int
    origin: str   # the config.json read, or roles/vllm/models.yml
    where: str = "catalogue"   # "staged weights", "hub cache" or "catalogue"


def resolve_model(project: Project, catalog: Catalog, svc: Service) -> ResolvedModel | None:
    """config.json from where the weights are: staged weights, a hub cache, the catalogue."""
    name = str(svc.vars["model"])
    pinned = svc.weights.revision if svc.weights is not None and svc.weights.pinned else None
    revision = svc.vars.get("model_revision") or pinned
    # the controller's mirror of the model store (inventory `models.mirror`, docs/models.md) too
    mirrors = [*mirror_roots(svc.vars), Path(project.inventory.spec.models.mirror).expanduser()]
    found = find_config(name, project.root, cache_roots(svc.vars), mirrors, str(revision) if revision else None)
    facts = catalog.models.get(name)
    if found is not None:
        arch = load_arch(found.path)
        context = facts.context if facts else arch.max_position_embeddings
        return ResolvedModel(arch, context, str(found.path), found.where)
    if facts is not None:
        return ResolvedModel(facts.arch(), facts.context, CATALOG, "catalogue")
    return None


# ---------------------------------------------------------------- one vLLM instance


@dataclass(frozen=True)
class InstanceEstimate:
    """One vLLM instance on its card(s): vLLM's start-up figures and what would make it start."""

    service: str
    model: str
    model_source: str
    settings: VllmSettings
    startup: StartupEstimate
    native_context: int
    fix_max_model_len: int | None = None
    fix_utilization: float | None = None
    model_where: str = "catalogue"
    cards: tuple[int, ...] = (0,)
    sharing_gib: float = 0.0    # other instances' shares this version counts as its own

    @property
    def utilization(self) -> float:
        return self.settings.gpu_memory_utilization

    @property
    def budget_gib(self) -> float:
        return self.startup.budget_gib

    @property
    def needed_gib(self) -> float:
        """The least budget that starts: weights, overhead and one full-length sequence."""
        s = self.startup
        return s.weights_gib + s.overhead_gib + s.sequence_gib

    @property
    def starts(self) -> bool:
        return self.startup.starts

    @property
    def verdict(self) -> str:
        return self.startup.verdict

    def as_dict(self) -> dict[str, Any]:
        s = self.startup
        return {
            "service": self.service, "model": self.model, "model_source": self.model_source,
            "model_from": self.model_where, "cards": list(self.cards),
            "tensor_parallel_size": self.settings.tensor_parallel_size,
            "pipeline_parallel_size": self.settings.pipeline_parallel_size,
            "vllm_version": s.version, "engine": s.engine, "utilization": self.utilization,
            "total_gib": round(s.total_gib, 3), "budget_gib": round(s.budget_gib, 3),
            "weights_gib": round(s.weights_gib, 3), "activation_gib": round(s.activation_gib, 3),
            "non_torch_gib": round(s.non_torch_gib, 3), "cuda_graph_gib": round(s.cuda_graph_gib, 3),
            "overhead_gib": round(s.overhead_gib, 3), "kv_budget_gib": round(s.kv_gib, 3),
            "margin_gib": round(s.margin_gib, 3),
            "kv_cache_dtype": self.settings.kv_cache_dtype, "kv_bytes_per_token": s.kv_bytes_per_token,
            "kv_cache_tokens": s.kv_cache_tokens if s.predicts_tokens else None,
            "kv_cache_tokens_range": [s.tokens_low, s.tokens_high], "max_model_len": s.max_model_len,
            "max_concurrency": round(s.max_concurrency, 2), "max_num_batched_tokens": s.batched_tokens,
            "max_num_seqs": s.num_seqs, "needed_gib": round(self.needed_gib, 3), "verdict": s.verdict,
            "starts": s.starts, "fits": s.starts,
            "cannot_predict": [*s.cannot_predict, *s.doubts, *s.token_doubts] + (
                [] if s.predicts_tokens or s.cannot_predict else ["kv_cache_tokens: the model's band is wider than 10%"]),
            "fixes": {"max_model_len": self.fix_max_model_len, "gpu_memory_utilization": self.fix_utilization},
        }


def vllm_command(svc: Service) -> list[str]:
    """The argv the container will run: the rendered command, so the plan sizes what starts."""
    command = svc.compose.get("command")
    return [str(a) for a in command] if isinstance(command, list) else []


def vllm_settings(svc: Service, model: ResolvedModel) -> tuple[VllmSettings, dict[str, str | bool]]:
    args = engine_args(vllm_command(svc))
    env = svc.compose.get("environment")
    environ = {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}
    version = parse_version(svc.upstream_image.rpartition(":")[2])
    return settings_from_args(args, version, model.arch.max_position_embeddings, environ), args


def instance_estimate(svc: Service, model: ResolvedModel, card: Card,
                      cards: tuple[int, ...] = (0,)) -> InstanceEstimate:
    settings, args = vllm_settings(svc, model)
    quantization = args.get("quantization")
    arch = model.arch.with_quantization(str(quantization) if isinstance(quantization, str) else None)
    startup = estimate(arch, settings, card)
    est = InstanceEstimate(svc.name, str(svc.vars["model"]), model.origin, settings, startup,
                           model.native_context, model_where=model.where, cards=cards)
    if not startup.refuses:
        return est
    return replace(est, fix_max_model_len=longest_context(arch, settings, card) or None,
                   fix_utilization=utilization_needed(arch, settings, card))


def instance_cards(svc: Service) -> tuple[int, ...]:
    """The card indexes a GPU service uses: `gpu: 1` or `gpu: "0,1"` (NVIDIA_VISIBLE_DEVICES)."""
    value = svc.vars.get("gpu", 0)
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    return tuple(int(p) for p in parts) or (0,)


# ---------------------------------------------------------------- plan


@dataclass
class CardPlan:
    node: str
    index: int
    model: str
    vram_mib: int
    instances: list[InstanceEstimate] = field(default_factory=list)
    in_use_mib: int | None = None

    @property
    def utilization(self) -> float:
        return sum(i.utilization for i in self.instances)

    @property
    def card(self) -> Card:
        return Card(self.model, self.vram_mib, in_use_mib=self.in_use_mib)

    @property
    def where(self) -> str:
        return f"{self.node} GPU {self.index} ({self.model}, {self.card.total_gib:.2f} GiB usable)"


@dataclass
class NodePlan:
    node: Node
    services: list[Service]
    ports: dict[int, str]
    ram_needed_gb: float
    cards: list[CardPlan]


@dataclass
class Plan:
    nodes: list[NodePlan]
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list, repr=False)

    @property
    def feasible(self) -> bool:
        return not self.problems


def make_plan(project: Project, phases: Sequence[int] | None = None, nodes: set[str] | None = None) -> Plan:
    """The plan of the selected phases' services (every phase: None), on `nodes` (every node: None)."""
    services = build_services(project)
    if phases is not None:
        services = [s for s in services if s.phase in phases]
    catalog = load_catalog(project)
    plan = Plan(nodes=[], problems=[])
    for node in project.inventory.nodes.values():
        mine = [s for s in services if s.node == node.name]
        if mine and (nodes is None or node.name in nodes):
            plan.nodes.append(_node_plan(project, node, mine, catalog, plan))
    return plan


def _node_plan(project: Project, node: Node, services: list[Service], catalog: Catalog,
               plan: Plan) -> NodePlan:
    ports = _ports(node, services, plan.problems)
    ram = sum(s.ram_gb for s in services)
    if ram > node.spec.ram_gb - RAM_RESERVE_GB:
        plan.problems.append(
            f"{node.name}: services need {ram:.1f} GB of RAM but the node has {node.spec.ram_gb:g} GB "
            f"(keeping {RAM_RESERVE_GB:g} GB for the OS): move a service to another node"
        )
    cards = _cards(project, node, services, catalog, plan)
    _finish_node(plan)
    return NodePlan(node=node, services=services, ports=ports, ram_needed_gb=ram, cards=cards)


def _ports(node: Node, services: list[Service], problems: list[str]) -> dict[int, str]:
    used: dict[int, str] = {}
    for svc in services:
        for port in svc.ports:
            if port.port in used and used[port.port] != svc.name:
                problems.append(
                    f"{node.name}: port {port.port} is published by both {used[port.port]} and {svc.name}"
                )
            used[port.port] = svc.name
    return dict(sorted(used.items()))


def node_cards(node: Node) -> dict[int, CardPlan]:
    cards = {}
    for i, g in enumerate(node.gpus):
        index = g.index if g.index is not None else i
        cards[index] = CardPlan(node.name, index, g.model, g.vram_mib, in_use_mib=g.in_use_mib)
    return cards


def _cards(project: Project, node: Node, services: list[Service], catalog: Catalog,
           plan: Plan) -> list[CardPlan]:
    cards = node_cards(node)
    for svc in services:
        if not svc.gpu:
            continue
        wanted = instance_cards(svc)
        missing = [i for i in wanted if i not in cards]
        if missing or len(set(wanted)) != len(wanted):
            have = "no GPU" if not cards else f"GPUs {sorted(cards)}"
            what = f"GPU {','.join(map(str, wanted))}"
            plan.problems.append(f"{node.name}: {svc.name} needs {what} but the inventory lists {have}"
                                 if missing else f"{node.name}: {svc.name} lists a GPU twice: {what}")
            continue
        if "gpu_memory_utilization" in svc.vars and "model" in svc.vars:
            _vllm_on_cards(project, node, svc, [cards[i] for i in wanted], catalog, plan)
    for card in cards.values():
        _check_sharing(card, plan.problems)
    return list(cards.values())


def _check_sharing(card: CardPlan, problems: list[str]) -> None:
    if card.utilization > 1.0 + 1e-9:
        parts = " + ".join(f"{i.service} {i.utilization:g}" for i in card.instances)
        problems.append(
            f"{card.node} GPU {card.index} ({card.model}): gpu_memory_utilization adds up to "
            f"{card.utilization:.2f} ({parts}); instances sharing a card must sum to at most 1.0"
        )


def _vllm_on_cards(project: Project, node: Node, svc: Service, cards: list[CardPlan], catalog: Catalog,
                   plan: Plan) -> None:
    model = str(svc.vars["model"])
    resolved = resolve_model(project, catalog, svc)
    if resolved is None:
        plan.problems.append(
            f"{node.name}: {svc.name} serves {model!r}, which is not in roles/vllm/models.yml and "
            "has no config.json swarm can read: stage its weights, add its config.json figures to "
            "the catalog (with their source), point `model` at a local directory, or set "
            "`hf_cache` to a Hugging Face cache holding it"
        )
        return
    smallest = min(cards, key=lambda c: c.card.total_bytes - c.card.in_use_gib * 2**30)
    est = instance_estimate(svc, resolved, smallest.card, tuple(c.index for c in cards))
    for card in cards:
        card.instances.append(est)
    plan.pending.append(_Pending(svc, resolved, smallest, cards))


@dataclass(frozen=True)
class _Pending:
    """An instance placed on its cards, checked once every instance of the node is placed."""

    svc: Service
    resolved: ResolvedModel
    card: CardPlan
    cards: list[CardPlan]


def _finish_node(plan: Plan) -> None:
    """Versions that count every process's memory see the other instances on a card as
    theirs: each instance is re-sized as if it profiled last (the worst order)."""
    for p in plan.pending:
        est = next(e for e in p.card.instances if e.service == p.svc.name)
        others = sum(e.budget_gib for c in p.cards for e in c.instances if e.service != p.svc.name)
        if others and counts_device_wide(est.settings):
            crowded = replace(p.card.card, in_use_mib=round((p.card.card.in_use_gib + others) * 1024))
            est = replace(instance_estimate(p.svc, p.resolved, crowded, est.cards), sharing_gib=others)
            for c in p.cards:
                c.instances[:] = [est if e.service == p.svc.name else e for e in c.instances]
        _check_instance(p.svc, est, p.resolved, p.card, p.cards, plan)
    plan.pending.clear()


def _check_instance(svc: Service, est: InstanceEstimate, resolved: ResolvedModel, card: CardPlan,
                    cards: list[CardPlan], plan: Plan) -> None:
    workers = est.settings.workers
    if workers != len(cards):
        plan.problems.append(
            f"{card.where}: {svc.name} runs tensor_parallel_size {est.settings.tensor_parallel_size} x "
            f"pipeline_parallel_size {est.settings.pipeline_parallel_size} = {workers} worker(s), one per "
            f"card, but `gpu` lists {len(cards)} card(s): list {workers} cards (e.g. gpu: \"0,1\")")
        return
    if est.settings.max_model_len > resolved.native_context:
        plan.problems.append(
            f"{card.where}: {svc.name} max_model_len {est.settings.max_model_len} exceeds {est.model}'s "
            f"native context of {resolved.native_context} tokens: set max_model_len <= {resolved.native_context}"
        )
    if est.startup.refuses:
        plan.problems.append(f"{card.where}: {svc.name} cannot start: {refusal(est, card)}")
    elif not est.starts or not est.startup.predicts_tokens:
        plan.warnings.append(f"{card.where}: {svc.name}: {uncertainty(est)}")


# ---------------------------------------------------------------- messages


def refusal(est: InstanceEstimate, card: CardPlan) -> str:
    s = est.startup
    if est.sharing_gib:
        text = (f"vLLM {s.version} counts every process's memory on the card as its own, so the "
                f"{est.sharing_gib:.2f} GiB the other instance(s) on it take leave it "
                f"{s.kv_gib:.2f} GiB of KV cache where one {s.max_model_len}-token sequence needs "
                f"{s.sequence_gib:.2f} GiB (fixed in vLLM 0.6.5 for V0, 0.9.2 for V1). ")
        fix = ["an image_tag of v0.6.5 or later (each instance then counts only its own memory)",
               "one instance per card"]
        return text + "Cheapest fixes: " + "; or ".join(fix)
    if s.refusal:
        text = s.refusal + ". "
    else:
        text = (f"vLLM {s.version} ({s.engine}) keeps {s.kv_cache_tokens:,} tokens of KV cache "
                f"({_budget_sum(s)}, within {s.margin_gib:.2f} GiB) but one {s.max_model_len}-token "
                f"sequence needs {s.sequence_gib:.2f} GiB ({s.max_concurrency:.2f} sequences fit). ")
    return text + "Cheapest fixes (each re-planned, margin included): " + "; or ".join(fixes(est, card))


def uncertainty(est: InstanceEstimate) -> str:
    """Why the plan gives no verdict, or no token figure, for an instance."""
    s = est.startup
    if s.cannot_predict:
        return "cannot predict: " + "; ".join(s.cannot_predict)
    reasons = list(s.doubts) + list(s.token_doubts)
    if not s.starts and not s.doubts:
        reasons.append(f"one {s.max_model_len}-token sequence fits only within the model's margin "
                       f"(KV {s.kv_gib:.2f} GiB, -{s.margin_gib:.2f}/+{s.margin_gib:.2f} GiB or more where "
                       "other processes' memory on the card is unknown: set the card's in_use_mib)")
    if not s.predicts_tokens and not s.token_doubts:
        reasons.append(f"kv_cache_tokens between {s.tokens_low:,} and {s.tokens_high:,}, not within 10%")
    verdict = "starts" if s.starts else "may not start"
    return f"cannot predict ({verdict}): " + "; ".join(reasons)


def _budget_sum(s: StartupEstimate) -> str:
    return (f"{s.kv_gib:.2f} GiB = {s.utilization:g} x {s.total_gib:.2f} GiB - weights "
            f"{s.weights_gib:.2f} - activation {s.activation_gib:.2f} - runtime "
            f"{s.non_torch_gib + s.cuda_graph_gib:.2f}")


def fixes(est: InstanceEstimate, card: CardPlan) -> list[str]:
    out: list[str] = []
    if est.fix_max_model_len:
        out.append(f"max_model_len {est.fix_max_model_len} (the longest that starts at "
                   f"gpu_memory_utilization {est.utilization:g})")
    util = est.fix_utilization
    others = card.utilization - est.utilization
    safe = max_safe_utilization(est.settings, card.card)
    if util is not None and util <= safe and util + others <= 1.0 + 1e-9:
        out.append(f"gpu_memory_utilization {util:.2f} (keeps max_model_len {est.settings.max_model_len}; "
                   f"leaves the {card.card.total_gib * (1 - util):.2f} GiB vLLM needs beside its share)")
    elif util is not None and util <= safe:
        out.append(f"gpu_memory_utilization {util:.2f}, which the other instances on this card "
                   f"(taking {others:.2f}) leave no room for")
    elif util is not None and util <= 1.0:
        out.append(f"not gpu_memory_utilization {util:.2f}: it would leave {card.card.total_gib * (1 - util):.2f} "
                   f"GiB beside vLLM's share, where up to {card.card.total_gib * (1 - safe):.2f} GiB may be needed")
    if est.settings.kv_cache_dtype.lower() not in FP8_KV:
        out.append("kv_cache_dtype fp8 (halves the KV cache per token)")
    if not out or est.startup.weights_gib + est.startup.overhead_gib >= est.startup.total_gib:
        out.append(f"a smaller or more quantized model: the weights alone are "
                   f"{est.startup.weights_gib:.2f} GiB of the card's {est.startup.total_gib:.2f} GiB")
    return out


def require_feasible(plan: Plan, inventory_path: Path) -> None:
    if plan.problems:
        body = "\n  - ".join(plan.problems)
        raise PlanError(f"the plan cannot work on this hardware:\n  - {body}", file=str(inventory_path))


def describe(plan: Plan) -> list[str]:
    lines = _describe_nodes(plan)
    lines.extend(f"warning: {w}" for w in plan.warnings)
    return lines


def _describe_nodes(plan: Plan) -> list[str]:
    lines: list[str] = []
    for np_ in plan.nodes:
        n = np_.node
        lines.append(f"{n.name} ({n.address}, {n.platform}, {n.spec.ram_gb:g} GB RAM)")
        for svc in np_.services:
            ports = ",".join(str(p.port) for p in svc.ports) or "-"
            flag = " [protected]" if svc.protected else ""
            lines.append(f"  {svc.name:<20} {svc.role:<18} ports {ports:<14} {svc.upstream_image}{flag}")
        lines.append(f"  RAM: {np_.ram_needed_gb:.1f} of {n.spec.ram_gb:g} GB")
        for card in np_.cards:
            lines.append(f"  GPU {card.index} {card.model} {card.vram_mib / 1024:.1f} GiB "
                         f"({card.card.total_gib:.2f} usable), utilization {card.utilization:.2f} of 1.00")
            lines.extend(line for e in card.instances if e.cards[0] == card.index
                         for line in _describe_instance(e))
            lines.extend(f"    {e.service:<18} (its card {e.cards.index(card.index) + 1} of {len(e.cards)})"
                         for e in card.instances if e.cards[0] != card.index)
    return lines


def _describe_instance(e: InstanceEstimate) -> list[str]:
    s = e.startup
    verdict = {"starts": "ok", "refuses": "CANNOT START"}.get(s.verdict, "CANNOT PREDICT")
    split = f", TP {e.settings.tensor_parallel_size} x PP {e.settings.pipeline_parallel_size} on GPUs " \
            f"{','.join(map(str, e.cards))}" if s.cards > 1 else ""
    tokens = f"{s.kv_cache_tokens:,}" if s.predicts_tokens else f"{s.tokens_low:,}-{s.tokens_high:,}"
    return [
        f"    {e.service:<18} vLLM {s.version} {s.engine}{split}: budget {s.budget_gib:.2f} GiB "
        f"({e.utilization:g}) = weights {s.weights_gib:.2f} + activation/overhead {s.overhead_gib:.2f}"
        f" + KV {s.kv_gib:.2f} (+/-{s.margin_gib:.2f}); config.json from the {e.model_where}",
        f"    {'':<18} kv_cache_tokens {tokens} ({e.settings.kv_cache_dtype}, "
        f"{s.kv_bytes_per_token // 1024} KiB/token), max_concurrency {s.max_concurrency:.2f}x at "
        f"{s.max_model_len} tokens: {verdict}",
    ]


def as_dict(plan: Plan) -> dict[str, Any]:
    return {
        "feasible": plan.feasible,
        "problems": plan.problems,
        "warnings": plan.warnings,
        "nodes": {
            np_.node.name: {
                "services": [s.name for s in np_.services],
                "ports": {str(k): v for k, v in np_.ports.items()},
                "ram_needed_gb": np_.ram_needed_gb,
                "gpus": [{"index": c.index, "model": c.model, "vram_mib": c.vram_mib,
                          "usable_gib": round(c.card.total_gib, 3), "utilization": c.utilization,
                          "instances": [e.as_dict() for e in c.instances if e.cards[0] == c.index],
                          "shared_with": [e.service for e in c.instances if e.cards[0] != c.index]}
                         for c in np_.cards],
            } for np_ in plan.nodes
        },
    }
