"""Plan: what a phase will run where, and whether it fits — ports, RAM and GPU memory.

GPU memory per vLLM instance (all figures in GiB = 2**30 bytes):

    weights  = parameters x bits/8 x (1 + 0.10 if quantized)   # scales, zeros, fp16 embeddings
    kv_cache = 2 x layers x kv_heads x head_dim x kv_bytes x max_model_len
               (room for at least one full-length sequence; kv_bytes 1 for fp8, 2 otherwise)
    overhead = 1.5                                              # CUDA context, activations, graphs
    needed   = weights + kv_cache + overhead  <=  gpu_memory_utilization x card VRAM

and the utilisation fractions of all instances sharing one card must sum to at most 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from orchestrator.config.inventory import Node
from orchestrator.config.models import Model
from orchestrator.config.project import Project
from orchestrator.config.yamlfile import load_yaml, validate
from orchestrator.errors import PlanError
from orchestrator.render.services import Service, build_services

GIB = 2**30
RUNTIME_OVERHEAD_GIB = 1.5
QUANT_OVERHEAD = 0.10
RAM_RESERVE_GB = 2.0
_BITS = {"gptq": 4, "awq": 4, "int4": 4, "bitsandbytes": 4, "fp8": 8, "int8": 8,
         "gptq_8bit": 8, "bf16": 16, "fp16": 16, "float16": 16, "bfloat16": 16, "auto": 16}
_KV_BYTES = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "auto": 2, "fp16": 2, "bf16": 2}


class ModelFacts(Model):
    params_b: float = Field(gt=0)
    layers: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    native_context: int = Field(gt=0)
    weights: str = "bf16"
    source: str


class Catalog(Model):
    models: dict[str, ModelFacts]


def load_catalog(project: Project) -> Catalog:
    path = project.roles_dir / "vllm" / "models.yml"
    if not path.is_file():
        return Catalog(models={})
    return validate(Catalog, load_yaml(path, what="model catalog"), "model catalog")


# ---------------------------------------------------------------- VRAM arithmetic


@dataclass(frozen=True)
class VramEstimate:
    service: str
    model: str
    weights_gib: float
    kv_gib: float
    overhead_gib: float
    budget_gib: float
    utilization: float
    kv_per_token_bytes: int
    max_model_len: int

    @property
    def needed_gib(self) -> float:
        return self.weights_gib + self.kv_gib + self.overhead_gib

    @property
    def fits(self) -> bool:
        return self.needed_gib <= self.budget_gib

    def max_context(self) -> int:
        """Longest sequence whose KV cache fits beside weights and overhead."""
        room = self.budget_gib - self.weights_gib - self.overhead_gib
        return max(0, int(room * GIB // self.kv_per_token_bytes))


def weights_gib(facts: ModelFacts, quantization: str | None) -> float:
    fmt = (quantization or facts.weights).lower()
    bits = _BITS.get(fmt, 16)
    overhead = QUANT_OVERHEAD if bits < 16 else 0.0
    return facts.params_b * 1e9 * bits / 8 * (1 + overhead) / GIB


def kv_bytes_per_token(facts: ModelFacts, kv_cache_dtype: str) -> int:
    return 2 * facts.layers * facts.kv_heads * facts.head_dim * _KV_BYTES.get(kv_cache_dtype, 2)


def estimate(svc: Service, facts: ModelFacts, vram_mib: int) -> VramEstimate:
    v = svc.vars
    per_token = kv_bytes_per_token(facts, str(v.get("kv_cache_dtype", "auto")))
    length = int(v["max_model_len"])
    util = float(v["gpu_memory_utilization"])
    return VramEstimate(
        service=svc.name, model=str(v["model"]),
        weights_gib=weights_gib(facts, v.get("quantization")),
        kv_gib=per_token * length / GIB, overhead_gib=RUNTIME_OVERHEAD_GIB,
        budget_gib=util * vram_mib / 1024, utilization=util,
        kv_per_token_bytes=per_token, max_model_len=length,
    )


# ---------------------------------------------------------------- plan


@dataclass
class CardPlan:
    node: str
    index: int
    model: str
    vram_mib: int
    instances: list[VramEstimate] = field(default_factory=list)

    @property
    def utilization(self) -> float:
        return sum(i.utilization for i in self.instances)


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
            plans.append(_node_plan(node, mine, catalog, problems))
    return Plan(nodes=plans, problems=problems)


def _node_plan(node: Node, services: list[Service], catalog: Catalog, problems: list[str]) -> NodePlan:
    ports = _ports(node, services, problems)
    ram = sum(s.ram_gb for s in services)
    if ram > node.spec.ram_gb - RAM_RESERVE_GB:
        problems.append(
            f"{node.name}: services need {ram:.1f} GB of RAM but the node has {node.spec.ram_gb:g} GB "
            f"(keeping {RAM_RESERVE_GB:g} GB for the OS): move a service to another node"
        )
    cards = _cards(node, services, catalog, problems)
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


def _cards(node: Node, services: list[Service], catalog: Catalog, problems: list[str]) -> list[CardPlan]:
    cards = {g.index if g.index is not None else i: CardPlan(node.name, g.index if g.index is not None else i, g.model, g.vram_mib)
             for i, g in enumerate(node.gpus)}
    for svc in services:
        if not svc.gpu:
            continue
        index = int(svc.vars.get("gpu", 0))
        if index not in cards:
            have = "no GPU" if not cards else f"GPUs {sorted(cards)}"
            problems.append(f"{node.name}: {svc.name} needs GPU {index} but the inventory lists {have}")
            continue
        if "gpu_memory_utilization" in svc.vars and "model" in svc.vars:
            _vllm_on_card(node, svc, cards[index], catalog, problems)
    for card in cards.values():
        if card.utilization > 1.0 + 1e-9:
            parts = " + ".join(f"{i.service} {i.utilization:g}" for i in card.instances)
            problems.append(
                f"{node.name} GPU {card.index} ({card.model}): gpu_memory_utilization adds up to "
                f"{card.utilization:.2f} ({parts}); instances sharing a card must sum to at most 1.0"
            )
    return list(cards.values())


def _vllm_on_card(node: Node, svc: Service, card: CardPlan, catalog: Catalog, problems: list[str]) -> None:
    model = str(svc.vars["model"])
    facts = catalog.models.get(model)
    if facts is None:
        problems.append(
            f"{node.name}: {svc.name} serves {model!r}, which is not in roles/vllm/models.yml: "
            "add its parameters, layers, kv_heads, head_dim and native_context"
        )
        return
    est = estimate(svc, facts, card.vram_mib)
    card.instances.append(est)
    where = f"{node.name} GPU {card.index} ({card.model}, {card.vram_mib / 1024:.1f} GiB)"
    if est.max_model_len > facts.native_context:
        problems.append(
            f"{where}: {svc.name} max_model_len {est.max_model_len} exceeds {model}'s native "
            f"context of {facts.native_context} tokens: set max_model_len <= {facts.native_context}"
        )
    if not est.fits:
        problems.append(f"{where}: {svc.name} does not fit: {_shortfall(est, facts, svc, card)}")


def _shortfall(est: VramEstimate, facts: ModelFacts, svc: Service, card: CardPlan) -> str:
    short = est.needed_gib - est.budget_gib
    text = (f"needs {est.needed_gib:.1f} GiB (weights {est.weights_gib:.1f} + KV cache "
            f"{est.kv_gib:.1f} for {est.max_model_len} tokens + runtime {est.overhead_gib:.1f}) but "
            f"gpu_memory_utilization {est.utilization:g} gives {est.budget_gib:.1f} GiB — "
            f"{short:.1f} GiB over. ")
    return text + "Would fit: " + "; ".join(_suggestions(est, facts, svc, card))


def _suggestions(est: VramEstimate, facts: ModelFacts, svc: Service, card: CardPlan) -> list[str]:
    card_gib = card.vram_mib / 1024
    out: list[str] = []
    if est.weights_gib + est.overhead_gib >= card_gib:
        four_bit = weights_gib(facts, "awq")
        fix = (f"a 4-bit quantization ({four_bit:.1f} GiB)" if four_bit + est.overhead_gib < card_gib
               else f"a smaller model, or a card with at least {est.needed_gib:.0f} GiB")
        out.append(f"nothing on this card — the weights alone ({est.weights_gib:.1f} GiB) plus runtime "
                   f"fill the {card_gib:.1f} GiB card: use {fix}")
        return out
    ctx = est.max_context()
    if ctx >= 1024:
        out.append(f"max_model_len <= {ctx // 1024 * 1024}")
    if svc.vars.get("kv_cache_dtype", "auto") not in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        fp8 = VramEstimate(**{**est.__dict__, "kv_per_token_bytes": est.kv_per_token_bytes // 2,
                              "kv_gib": est.kv_gib / 2})
        out.append(f"kv_cache_dtype fp8 (KV cache {fp8.kv_gib:.1f} GiB)")
    need_util = est.needed_gib / card_gib
    others = card.utilization - est.utilization
    if need_util + others <= 1.0:
        out.append(f"gpu_memory_utilization >= {need_util:.2f}")
    else:
        out.append(f"gpu_memory_utilization {need_util:.2f} alone, which leaves {max(0.0, 1 - need_util):.2f} "
                   "for the other instances on this card")
    if facts.weights in {"bf16", "fp16"} and not svc.vars.get("quantization"):
        out.append(f"a 4-bit quantization (weights {weights_gib(facts, 'awq'):.1f} GiB)")
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
            lines.append(f"  GPU {card.index} {card.model} {card.vram_mib / 1024:.1f} GiB, "
                         f"utilization {card.utilization:.2f} of 1.00")
            for e in card.instances:
                ok = "ok" if e.fits else "DOES NOT FIT"
                lines.append(
                    f"    {e.service:<18} weights {e.weights_gib:5.1f} + KV {e.kv_gib:5.1f} "
                    f"({e.max_model_len} tok) + runtime {e.overhead_gib:.1f} = {e.needed_gib:5.1f} GiB "
                    f"of {e.budget_gib:5.1f} ({e.utilization:g}) {ok}")
    return lines


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
                          "utilization": c.utilization,
                          "instances": [{**e.__dict__, "needed_gib": e.needed_gib, "fits": e.fits}
                                        for e in c.instances]} for c in np_.cards],
            } for np_ in plan.nodes
        },
    }
