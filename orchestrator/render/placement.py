"""Placement: which cards, share and split each wanted model gets, proposed by the GPU plan.

`swarm plan --place wants.yml` reads the models to serve,

    serve:
      coder:                       # the service name the fragment will use
        model: Qwen/Qwen2.5-Coder-7B-Instruct
        context: 16384             # max_model_len wanted
        concurrency: 4             # full-length sequences wanted at once (max_num_seqs)
        prefer: starlord           # optional: a node, or node:gpu
        image_tag: v0.6.3          # optional, as the vllm role's settings
        kv_cache_dtype: fp8        # optional

and proposes for each instance the card(s), `gpu_memory_utilization`, `max_model_len`,
`max_num_seqs` and the tensor/pipeline split, as an inventory fragment the user can merge
(nothing is kept elsewhere). Every proposal is re-planned with the same model `swarm plan`
uses (render/vllm_memory.py) and must *start* by its verdict, margin included: a
configuration the plan predicts vLLM refuses, or cannot predict, is never proposed.

How it chooses, in order:
  1. each want's smallest share that starts with its context and concurrency, on one card,
     else split over 2, 4, ... cards of one node (tensor parallel where the attention heads
     divide, else pipeline parallel), never above the share that leaves vLLM's outside needs
     free (max_safe_utilization);
  2. the largest wants first, each on the candidate that honours its preference, else the
     one whose card keeps the least room after it (best fit, so large later wants still fit);
  3. every card's room left, up to its safe share, goes to the instance on it that turns a
     GiB into the most KV tokens, and is re-planned: the fleet's total KV capacity grows and
     no want is given less than it asked.
An even split (each want alone on the next card, the card's safe share divided evenly) is
planned too; the proposal is never below its capacity. Nodes left out by --limit are not
used, so a node that is down is planned around by leaving it out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import Field

from orchestrator.config.models import Model
from orchestrator.config.project import Project
from orchestrator.config.yamlfile import load_yaml, validate
from orchestrator.errors import PlanError
from orchestrator.render.hf_config import cache_roots, find_config, load_arch, mirror_roots
from orchestrator.render.model_arch import ModelArch
from orchestrator.render.plan import load_catalog, node_cards
from orchestrator.render.vllm_memory import (
    Card,
    StartupEstimate,
    VllmSettings,
    estimate,
    max_safe_utilization,
    parse_version,
)

SPLITS = (1, 2, 4, 8)


class Want(Model):
    """One model to serve, as the wants file states it."""

    model: str
    context: int = Field(gt=0, le=10_000_000)
    concurrency: int = Field(1, ge=1, le=100_000)
    prefer: str | None = None
    image_tag: str | None = None
    kv_cache_dtype: str = "auto"
    quantization: str | None = None


class Wants(Model):
    serve: dict[str, Want] = Field(min_length=1)


def load_wants(path: Path) -> Wants:
    return validate(Wants, load_yaml(path, what="placement wants"), "placement wants")


@dataclass(frozen=True)
class Slot:
    """One card of the fleet, and the share of it already taken by instances not placed here."""

    node: str
    index: int
    card: Card
    taken: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.node}:{self.index}"


@dataclass(frozen=True)
class Choice:
    """One proposed instance: where, with what, what vLLM will make of it, and why."""

    name: str
    want: Want
    slots: tuple[Slot, ...]
    settings: VllmSettings
    startup: StartupEstimate
    reasons: tuple[str, ...] = ()

    @property
    def utilization(self) -> float:
        return self.settings.gpu_memory_utilization

    @property
    def capacity(self) -> int:
        return self.startup.capacity_tokens


@dataclass
class Placement:
    choices: list[Choice]
    unplaced: dict[str, str] = field(default_factory=dict)
    baseline_capacity: int = 0
    baseline_unplaced: int = 0

    @property
    def capacity(self) -> int:
        return sum(c.capacity for c in self.choices)


ArchOf = Mapping[str, ModelArch]


# ---------------------------------------------------------------- one want on some cards


def settings_for(want: Want, version: tuple[int, ...], util: float, tp: int, pp: int) -> VllmSettings:
    return VllmSettings(version=version, gpu_memory_utilization=util, max_model_len=want.context,
                        max_num_seqs=want.concurrency, kv_cache_dtype=want.kv_cache_dtype,
                        tensor_parallel_size=tp, pipeline_parallel_size=pp)


def meets(est: StartupEstimate, want: Want) -> bool:
    """Starts by the model's verdict and holds the wanted sequences at full length, at the
    low end of the model's band."""
    return est.starts and est.concurrency_low >= want.concurrency


def smallest_share(arch: ModelArch, want: Want, version: tuple[int, ...], card: Card, tp: int,
                   pp: int) -> float | None:
    """The least utilization (two decimals) that meets the want on cards like `card`."""
    top = max_safe_utilization(settings_for(want, version, 0.9, tp, pp), card)
    lo, hi = 1, int(round(top * 100))
    if hi < lo or not meets(estimate(arch, settings_for(want, version, hi / 100, tp, pp), card), want):
        return None
    while lo < hi:        # the KV budget grows with the share: bisect on hundredths
        mid = (lo + hi) // 2
        if meets(estimate(arch, settings_for(want, version, mid / 100, tp, pp), card), want):
            hi = mid
        else:
            lo = mid + 1
    return hi / 100


def splits(arch: ModelArch, cards: int) -> list[tuple[int, int]]:
    """(tensor, pipeline) splits for `cards` workers: TP where vLLM accepts it (the attention
    heads divide), else pipeline stages."""
    if cards == 1:
        return [(1, 1)]
    out = []
    if arch.num_attention_heads % cards == 0:
        out.append((cards, 1))
    if arch.num_hidden_layers >= cards:
        out.append((1, cards))
    return out


# ---------------------------------------------------------------- the whole fleet


@dataclass
class _Board:
    """The fleet's cards and what is booked on each, as the placement goes."""

    slots: list[Slot]
    booked: dict[str, float] = field(default_factory=dict)

    def room(self, slot: Slot) -> float:
        return 1.0 - slot.taken - self.booked.get(slot.key, 0.0)

    def book(self, slots: Iterable[Slot], util: float) -> None:
        for s in slots:
            self.booked[s.key] = self.booked.get(s.key, 0.0) + util

    def groups(self, size: int) -> list[tuple[Slot, ...]]:
        """Sets of `size` cards of one node, the roomiest first."""
        by_node: dict[str, list[Slot]] = {}
        for s in self.slots:
            by_node.setdefault(s.node, []).append(s)
        out = []
        for cards in by_node.values():
            ranked = sorted(cards, key=lambda s: (-self.room(s), s.index))
            for i in range(0, len(ranked) - size + 1, size):
                out.append(tuple(sorted(ranked[i:i + size], key=lambda s: s.index)))
        return out


def place(wants: Wants, archs: ArchOf, slots: Sequence[Slot], default_version: tuple[int, ...]) -> Placement:
    """The best of a packed (best-fit) and a spread (worst-fit) placement, by wants placed
    then KV capacity; an even split where that holds more."""
    tries = [_place_with(wants, archs, slots, default_version, fit) for fit in ("best", "spread")]
    placement = min(tries, key=lambda p: (len(p.unplaced), -p.capacity))
    baseline = even_split(wants, archs, slots, default_version)
    placement.baseline_capacity = baseline.capacity
    placement.baseline_unplaced = len(baseline.unplaced)
    if not baseline.unplaced and baseline.capacity > placement.capacity:
        note = "the even split holds more KV here than the packed placement"
        return Placement([replace(c, reasons=(*c.reasons, note)) for c in baseline.choices],
                         {n: w for n, w in placement.unplaced.items() if n not in {c.name for c in baseline.choices}},
                         baseline.capacity)
    return placement


def _place_with(wants: Wants, archs: ArchOf, slots: Sequence[Slot], default_version: tuple[int, ...],
                fit: str) -> Placement:
    board = _Board(list(slots))
    placement = Placement(choices=[])
    for name, want in _need_order(wants, archs, slots, default_version):
        version = _version(want, default_version)
        choice = _place_one(name, want, archs[name], board, version, fit)
        if choice is None:
            placement.unplaced[name] = _why_not(want, archs[name], slots, version)
            continue
        board.book(choice.slots, choice.utilization)
        placement.choices.append(choice)
    placement.choices = _grow(placement.choices, board, archs)
    return placement


def _version(want: Want, default: tuple[int, ...]) -> tuple[int, ...]:
    return parse_version(want.image_tag) if want.image_tag else default


def _need_order(wants: Wants, archs: ArchOf, slots: Sequence[Slot],
                default: tuple[int, ...]) -> list[tuple[str, Want]]:
    """Largest first: the GiB each want needs on the biggest card (weights + KV wanted)."""
    def need(item: tuple[str, Want]) -> float:
        name, want = item
        arch = archs[name]
        per_token = arch.kv_bytes_per_token(want.kv_cache_dtype)
        return arch.weights_bytes() + per_token * want.context * want.concurrency
    return sorted(wants.serve.items(), key=lambda item: (-need(item), item[0]))


def _place_one(name: str, want: Want, arch: ModelArch, board: _Board, version: tuple[int, ...],
               fit: str = "best") -> Choice | None:
    for size in SPLITS:
        best: tuple[tuple[int, float], Choice] | None = None
        for tp, pp in splits(arch, size):
            for group in board.groups(size):
                choice = _fit(name, want, arch, group, board, version, tp, pp, fit)
                if choice is None:
                    continue
                left = min(board.room(s) for s in group) - choice.utilization
                rank = (0 if _preferred(want, group) else 1, left if fit == "best" else -left)
                if best is None or rank < best[0]:
                    best = (rank, choice)
        if best is not None:
            return best[1]
    return None


def _fit(name: str, want: Want, arch: ModelArch, group: tuple[Slot, ...], board: _Board,
         version: tuple[int, ...], tp: int, pp: int, fit: str) -> Choice | None:
    card = min((s.card for s in group), key=lambda c: c.total_bytes)
    share = _cached_share(arch, want, version, card, tp, pp)
    if share is None or share > min(board.room(s) for s in group) + 1e-9:
        return None
    settings = settings_for(want, version, share, tp, pp)
    why = ("the preferred card" if _preferred(want, group) else
           "the card that keeps the least room after it" if fit == "best" else "the roomiest card")
    reasons = [f"smallest share that starts with {want.context} tokens x {want.concurrency}: {share:.2f}",
               f"{why} ({', '.join(s.key for s in group)})"]
    if len(group) > 1:
        reasons.append(f"no single card holds it: {'tensor' if tp > 1 else 'pipeline'} parallel over {len(group)}")
    return Choice(name, want, group, settings, estimate(arch, settings, card), tuple(reasons))


_SHARES: dict[tuple[object, ...], float | None] = {}


def _cached_share(arch: ModelArch, want: Want, version: tuple[int, ...], card: Card, tp: int,
                  pp: int) -> float | None:
    """Cards of one model size the same: one search per (model, want, card kind, split)."""
    key = (arch, version, want.kv_cache_dtype, want.context, want.concurrency, card, tp, pp)
    if key not in _SHARES:
        _SHARES[key] = smallest_share(arch, want, version, card, tp, pp)
    return _SHARES[key]


def _preferred(want: Want, group: tuple[Slot, ...]) -> bool:
    if not want.prefer:
        return False
    node, _, gpu = want.prefer.partition(":")
    return all(s.node == node and (not gpu or str(s.index) == gpu) for s in group)


def _grow(choices: list[Choice], board: _Board, archs: ArchOf) -> list[Choice]:
    """Give each card's room left, up to its safe share, to the instance on it that makes the
    most KV tokens of a GiB; each raise re-planned."""
    out = list(choices)
    order = sorted(range(len(out)), key=lambda i: -_tokens_per_gib(out[i], archs[out[i].name]))
    for i in order:
        c = out[i]
        card = min((s.card for s in c.slots), key=lambda k: k.total_bytes)
        cap = min(max_safe_utilization(c.settings, card), min(board.room(s) + c.utilization for s in c.slots))
        util = math.floor(cap * 100) / 100
        if util <= c.utilization:
            continue
        settings = replace(c.settings, gpu_memory_utilization=util)
        est = estimate(archs[c.name], settings, card)
        if not meets(est, c.want):
            continue
        board.book(c.slots, util - c.utilization)
        out[i] = replace(c, settings=settings, startup=est,
                         reasons=(*c.reasons, f"raised to {util:.2f}: the card's room left, for the most KV tokens"))
    return out


def _tokens_per_gib(choice: Choice, arch: ModelArch) -> float:
    s = choice.settings
    return 2**30 / max(1, arch.kv_bytes_per_token(s.kv_cache_dtype, s.tensor_parallel_size))


def _why_not(want: Want, arch: ModelArch, slots: Sequence[Slot], version: tuple[int, ...]) -> str:
    biggest = max((s.card for s in slots), key=lambda c: c.total_bytes, default=None)
    if biggest is None:
        return "no GPU in the nodes planned"
    return (f"no card or set of cards of one node has room for {want.context} tokens x {want.concurrency} "
            f"(the weights alone are {arch.weights_gib():.2f} GiB; the largest card holds "
            f"{biggest.total_gib:.2f}): lower context or concurrency, quantize, or add a card")


def even_split(wants: Wants, archs: ArchOf, slots: Sequence[Slot], default: tuple[int, ...]) -> Placement:
    """The naive placement: wants dealt to cards in turn, each card's safe share divided
    evenly among the instances dealt to it; an instance that would not start holds nothing."""
    if not slots:
        return Placement(choices=[])
    dealt: dict[str, list[tuple[str, Want]]] = {}
    unplaced: dict[str, str] = {}
    for i, (name, want) in enumerate(sorted(wants.serve.items())):
        dealt.setdefault(slots[i % len(slots)].key, []).append((name, want))
    out = []
    for slot in slots:
        mine = dealt.get(slot.key, [])
        for name, want in mine:
            version = _version(want, default)
            safe = max_safe_utilization(settings_for(want, version, 0.9, 1, 1), slot.card)
            util = math.floor((safe - slot.taken) / len(mine) * 100) / 100
            settings = settings_for(want, version, max(util, 0.01), 1, 1)
            est = estimate(archs[name], settings, slot.card)
            if meets(est, want):
                why = (f"even split: GPU {slot.index} of {slot.node} shared by {len(mine)}",)
                out.append(Choice(name, want, (slot,), settings, est, why))
            else:
                unplaced[name] = f"an even share ({util:.2f} of GPU {slot.index} of {slot.node}) does not hold it"
    return Placement(choices=out, unplaced=unplaced)


# ---------------------------------------------------------------- the fragment


def fragment(placement: Placement, cards: Mapping[str, str]) -> list[str]:
    """The inventory fragment, with each choice explained in comments: merge it under nodes."""
    lines = ["# swarm plan --place: merge under `nodes:` of the inventory, in place of its vLLM",
             "# instances (each proposal re-planned by swarm plan's model, margin included).",
             f"# Fleet KV capacity {placement.capacity:,} tokens of context at once; an even split "
             f"gives {placement.baseline_capacity:,}" + (f" and leaves {placement.baseline_unplaced} model(s) "
                                                         "unserved." if placement.baseline_unplaced else "."),
             "nodes:"]
    by_node: dict[str, list[Choice]] = {}
    for c in placement.choices:
        by_node.setdefault(c.slots[0].node, []).append(c)
    for node in sorted(by_node):
        lines += [f"  {node}:", "    services:"]
        for c in sorted(by_node[node], key=lambda c: c.name):
            lines += _instance_lines(c, cards)
    for name, why in sorted(placement.unplaced.items()):
        lines.append(f"# {name}: not placed: {why}")
    return lines


def _instance_lines(c: Choice, cards: Mapping[str, str]) -> list[str]:
    s, e = c.settings, c.startup
    where = " + ".join(f"GPU {sl.index} {cards.get(sl.key, sl.card.name)}" for sl in c.slots)
    out = [f"      {c.name}:",
           f"        # {where}: KV {e.kv_gib:.2f} GiB (+/-{e.margin_gib:.2f}), {e.capacity_tokens:,} tokens "
           f"of context at once, {e.concurrency:.2f}x at {s.max_model_len}"]
    out += [f"        # {r}" for r in c.reasons]
    out += [f"        model: {c.want.model}",
            f"        gpu: \"{','.join(str(sl.index) for sl in c.slots)}\"",
            f"        gpu_memory_utilization: {s.gpu_memory_utilization:.2f}",
            f"        max_model_len: {s.max_model_len}",
            f"        max_num_seqs: {c.want.concurrency}",
            f"        kv_cache_dtype: {s.kv_cache_dtype}"]
    if s.tensor_parallel_size > 1:
        out.append(f"        tensor_parallel_size: {s.tensor_parallel_size}")
    if s.pipeline_parallel_size > 1:
        out.append(f"        pipeline_parallel_size: {s.pipeline_parallel_size}")
    if c.want.image_tag:
        out.append(f"        image_tag: {c.want.image_tag}")
    if c.want.quantization:
        out.append(f"        quantization: {c.want.quantization}")
    return out


def require_placed(placement: Placement, wants_path: Path) -> None:
    if placement.unplaced:
        body = "\n  - ".join(f"{n}: {w}" for n, w in sorted(placement.unplaced.items()))
        raise PlanError(f"cannot place every model:\n  - {body}", file=str(wants_path))


# ---------------------------------------------------------------- from a project


def project_slots(project: Project, limit: str | None) -> list[Slot]:
    """Every card of the nodes --limit keeps. The wants are the whole serving plan: the
    proposal replaces the inventory's vLLM instances (the fragment says so)."""
    keep = {n.name for n in project.inventory.select(limit)}
    out: list[Slot] = []
    for node in project.inventory.nodes.values():
        if node.name in keep:
            out.extend(Slot(node.name, index, card.card) for index, card in node_cards(node).items())
    return out


def want_archs(project: Project, wants: Wants) -> dict[str, ModelArch]:
    """Each want's architecture, from where its weights are (as `swarm plan` reads it)."""
    catalog = load_catalog(project)
    out = {}
    for name, want in wants.serve.items():
        found = find_config(want.model, project.root, cache_roots({}), mirror_roots(project.inventory.spec.vars))
        facts = catalog.models.get(want.model)
        if found is not None:
            arch = load_arch(found.path)
        elif facts is not None:
            arch = facts.arch()
        else:
            raise PlanError(f"serve.{name}.model: {want.model!r} is not in roles/vllm/models.yml and has no "
                            "config.json swarm can read (staged weights or a Hugging Face cache)")
        out[name] = arch.with_quantization(want.quantization)
    return out


def role_version(project: Project) -> tuple[int, ...]:
    role = project.roles.get("vllm")
    tag = role.spec.defaults.get("image_tag") if role else None
    return parse_version(str(tag) if tag else None)


def place_project(project: Project, wants: Wants, limit: str | None = None) -> Placement:
    slots = project_slots(project, limit)
    return place(wants, want_archs(project, wants), slots, role_version(project))
