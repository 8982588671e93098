"""Plan: what a phase will run where, and whether it fits: ports, RAM and GPU memory.

Every vLLM instance is sized the way vLLM itself sizes it at start-up (render/vllm_memory.py,
checked against published start-up logs), from the engine arguments of its rendered command
line and the vLLM version of its image: its share of the card, gpu_memory_utilization x
total, less the weights (from the model's config.json figures, render/model_arch.py), the
activation peak of the profiling run and runtime overheads, is its KV cache. The plan
reports per instance the weights, overhead, KV budget, `kv_cache_tokens` and
`max_concurrency` at max_model_len, and refuses (exit 2) where fewer than one full-length
sequence fits, the case where vLLM itself refuses to start, with the two cheapest fixes:
the longest max_model_len that starts, and the utilization the current one needs.

The model's figures come from roles/vllm/models.yml (config.json figures with their source),
else from the model's own config.json (render/hf_config.py). The utilization fractions of
all instances sharing one card must sum to at most 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import Field

from orchestrator.config.inventory import Node
from orchestrator.config.models import Model
from orchestrator.config.project import Project
from orchestrator.config.yamlfile import load_yaml, validate
from orchestrator.errors import PlanError
from orchestrator.render.hf_config import cache_roots, find_config, load_arch
from orchestrator.render.model_arch import (
    FP8_KV,
    ModelArch,
    Quantization,
    quantization_named,
)
from orchestrator.render.services import Service, build_services
from orchestrator.render.vllm_memory import (
    Card,
    StartupEstimate,
    VllmSettings,
    engine_args,
    estimate,
    longest_context,
    parse_version,
    settings_from_args,
    utilization_needed,
)

RAM_RESERVE_GB = 2.0


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
    num_experts: int = Field(0, ge=0)
    num_experts_per_tok: int = Field(0, ge=0)
    moe_intermediate_size: int = Field(0, ge=0)
    quantization: str | None = None
    bits: int | None = Field(None, gt=0, le=16)
    group_size: int | None = Field(None, ge=0)
    native_context: int | None = Field(None, gt=0)
    source: str
    quantization_source: str | None = None
    context_source: str | None = None
    revision: str | None = None   # the commit swarm stages (render/weights.py, docs/models.md)

    def arch(self) -> ModelArch:
        return ModelArch(
            hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim or self.hidden_size // self.num_attention_heads,
            vocab_size=self.vocab_size, max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings, num_experts=self.num_experts,
            num_experts_per_tok=self.num_experts_per_tok,
            moe_intermediate_size=self.moe_intermediate_size, quant=self._quant(), source=self.source,
        )

    def _quant(self) -> Quantization:
        named = quantization_named(self.quantization)
        if not named.is_quantized:
            return named
        return Quantization(named.method, self.bits or named.bits,
                            named.group_size if self.group_size is None else self.group_size)

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
    origin: str   # "roles/vllm/models.yml" or the config.json it was read from


def resolve_model(project: Project, catalog: Catalog, svc: Service) -> ResolvedModel | None:
    name = str(svc.vars["model"])
    facts = catalog.models.get(name)
    if facts is not None:
        return ResolvedModel(facts.arch(), facts.context, "roles/vllm/models.yml")
    path = find_config(name, project.root, cache_roots(svc.vars))
    if path is None:
        return None
    arch = load_arch(path)
    return ResolvedModel(arch, arch.max_position_embeddings, str(path))


# ---------------------------------------------------------------- one vLLM instance


@dataclass(frozen=True)
class InstanceEstimate:
    """One vLLM instance on one card: vLLM's start-up figures and what would make it start."""

    service: str
    model: str
    model_source: str
    settings: VllmSettings
    startup: StartupEstimate
    native_context: int
    fix_max_model_len: int | None = None
    fix_utilization: float | None = None

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

    def as_dict(self) -> dict[str, Any]:
        s = self.startup
        return {
            "service": self.service, "model": self.model, "model_source": self.model_source,
            "vllm_version": s.version, "engine": s.engine, "utilization": self.utilization,
            "total_gib": round(s.total_gib, 3), "budget_gib": round(s.budget_gib, 3),
            "weights_gib": round(s.weights_gib, 3), "activation_gib": round(s.activation_gib, 3),
            "non_torch_gib": round(s.non_torch_gib, 3), "cuda_graph_gib": round(s.cuda_graph_gib, 3),
            "overhead_gib": round(s.overhead_gib, 3), "kv_budget_gib": round(s.kv_gib, 3),
            "kv_cache_dtype": self.settings.kv_cache_dtype, "kv_bytes_per_token": s.kv_bytes_per_token,
            "kv_cache_tokens": s.kv_cache_tokens, "max_model_len": s.max_model_len,
            "max_concurrency": round(s.max_concurrency, 2), "max_num_batched_tokens": s.batched_tokens,
            "max_num_seqs": s.num_seqs, "needed_gib": round(self.needed_gib, 3), "starts": s.starts,
            "fits": s.starts,
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


def instance_estimate(svc: Service, model: ResolvedModel, card: Card) -> InstanceEstimate:
    settings, args = vllm_settings(svc, model)
    quantization = args.get("quantization")
    arch = model.arch.with_quantization(str(quantization) if isinstance(quantization, str) else None)
    startup = estimate(arch, settings, card)
    est = InstanceEstimate(svc.name, str(svc.vars["model"]), model.origin, settings, startup,
                           model.native_context)
    if startup.starts:
        return est
    return replace(est, fix_max_model_len=longest_context(arch, settings, card) or None,
                   fix_utilization=utilization_needed(arch, settings, card))


# ---------------------------------------------------------------- plan


@dataclass
class CardPlan:
    node: str
    index: int
    model: str
    vram_mib: int
    instances: list[InstanceEstimate] = field(default_factory=list)

    @property
    def utilization(self) -> float:
        return sum(i.utilization for i in self.instances)

    @property
    def card(self) -> Card:
        return Card(self.model, self.vram_mib)

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

    @property
    def feasible(self) -> bool:
        return not self.problems


def make_plan(project: Project, phase: int | None = None) -> Plan:
    services = build_services(project)
    if phase is not None:
        wanted = project.playbook.phase(phase)
        services = [s for s in services if s.phase == wanted.id]
    catalog = load_catalog(project)
    problems: list[str] = []
    plans = []
    for node in project.inventory.nodes.values():
        mine = [s for s in services if s.node == node.name]
        if mine:
            plans.append(_node_plan(project, node, mine, catalog, problems))
    return Plan(nodes=plans, problems=problems)


def _node_plan(project: Project, node: Node, services: list[Service], catalog: Catalog,
               problems: list[str]) -> NodePlan:
    ports = _ports(node, services, problems)
    ram = sum(s.ram_gb for s in services)
    if ram > node.spec.ram_gb - RAM_RESERVE_GB:
        problems.append(
            f"{node.name}: services need {ram:.1f} GB of RAM but the node has {node.spec.ram_gb:g} GB "
            f"(keeping {RAM_RESERVE_GB:g} GB for the OS): move a service to another node"
        )
    cards = _cards(project, node, services, catalog, problems)
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


def _cards(project: Project, node: Node, services: list[Service], catalog: Catalog,
           problems: list[str]) -> list[CardPlan]:
    cards = {}
    for i, g in enumerate(node.gpus):
        index = g.index if g.index is not None else i
        cards[index] = CardPlan(node.name, index, g.model, g.vram_mib)
    for svc in services:
        if not svc.gpu:
            continue
        index = int(svc.vars.get("gpu", 0))
        if index not in cards:
            have = "no GPU" if not cards else f"GPUs {sorted(cards)}"
            problems.append(f"{node.name}: {svc.name} needs GPU {index} but the inventory lists {have}")
            continue
        if "gpu_memory_utilization" in svc.vars and "model" in svc.vars:
            _vllm_on_card(project, node, svc, cards[index], catalog, problems)
    for card in cards.values():
        _check_sharing(card, problems)
    return list(cards.values())


def _check_sharing(card: CardPlan, problems: list[str]) -> None:
    if card.utilization > 1.0 + 1e-9:
        parts = " + ".join(f"{i.service} {i.utilization:g}" for i in card.instances)
        problems.append(
            f"{card.node} GPU {card.index} ({card.model}): gpu_memory_utilization adds up to "
            f"{card.utilization:.2f} ({parts}); instances sharing a card must sum to at most 1.0"
        )


def _vllm_on_card(project: Project, node: Node, svc: Service, card: CardPlan, catalog: Catalog,
                  problems: list[str]) -> None:
    model = str(svc.vars["model"])
    resolved = resolve_model(project, catalog, svc)
    if resolved is None:
        problems.append(
            f"{node.name}: {svc.name} serves {model!r}, which is not in roles/vllm/models.yml and "
            "has no config.json swarm can read: add its config.json figures to the catalog (with "
            "their source), point `model` at a local directory, or set `hf_cache` to a Hugging "
            "Face cache holding it"
        )
        return
    est = instance_estimate(svc, resolved, card.card)
    card.instances.append(est)
    if est.settings.max_model_len > resolved.native_context:
        problems.append(
            f"{card.where}: {svc.name} max_model_len {est.settings.max_model_len} exceeds {model}'s "
            f"native context of {resolved.native_context} tokens: set max_model_len <= {resolved.native_context}"
        )
    if not est.starts:
        problems.append(f"{card.where}: {svc.name} cannot start: {refusal(est, card)}")


# ---------------------------------------------------------------- messages


def refusal(est: InstanceEstimate, card: CardPlan) -> str:
    s = est.startup
    text = (f"vLLM {s.version} ({s.engine}) keeps {s.kv_cache_tokens:,} tokens of KV cache "
            f"({_budget_sum(s)}) but one {s.max_model_len}-token sequence needs "
            f"{s.sequence_gib:.2f} GiB ({s.max_concurrency:.2f} sequences fit). ")
    return text + "Cheapest fixes: " + "; or ".join(fixes(est, card))


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
    if util is not None and util <= 1.0 and util + others <= 1.0 + 1e-9:
        out.append(f"gpu_memory_utilization {util:.2f} (keeps max_model_len {est.settings.max_model_len})")
    elif util is not None and util <= 1.0:
        out.append(f"gpu_memory_utilization {util:.2f}, which the other instances on this card "
                   f"(taking {others:.2f}) leave no room for")
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
            lines.extend(line for e in card.instances for line in _describe_instance(e))
    return lines


def _describe_instance(e: InstanceEstimate) -> list[str]:
    s = e.startup
    verdict = "ok" if s.starts else "CANNOT START"
    return [
        f"    {e.service:<18} vLLM {s.version} {s.engine}: budget {s.budget_gib:.2f} GiB "
        f"({e.utilization:g}) = weights {s.weights_gib:.2f} + activation/overhead {s.overhead_gib:.2f}"
        f" + KV {s.kv_gib:.2f}",
        f"    {'':<18} kv_cache_tokens {s.kv_cache_tokens:,} ({e.settings.kv_cache_dtype}, "
        f"{s.kv_bytes_per_token // 1024} KiB/token), max_concurrency {s.max_concurrency:.2f}x at "
        f"{s.max_model_len} tokens: {verdict}",
    ]


def as_dict(plan: Plan) -> dict[str, Any]:
    return {
        "feasible": plan.feasible,
        "problems": plan.problems,
        "nodes": {
            np_.node.name: {
                "services": [s.name for s in np_.services],
                "ports": {str(k): v for k, v in np_.ports.items()},
                "ram_needed_gb": np_.ram_needed_gb,
                "gpus": [{"index": c.index, "model": c.model, "vram_mib": c.vram_mib,
                          "usable_gib": round(c.card.total_gib, 3), "utilization": c.utilization,
                          "instances": [e.as_dict() for e in c.instances]} for c in np_.cards],
            } for np_ in plan.nodes
        },
    }
