"""Render: role + instance vars -> one compose project and its config files per node.

Rendering is strict (an undefined variable is an error naming the template and line)
and deterministic (same input -> byte-identical output), so the rendered tree for the
shipped inventory can be checked in and `swarm render --check` can tell when it is stale.
Secrets never reach templates: services get them through env files written at deploy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from orchestrator.commands.rollout import LIVE
from orchestrator.config.inventory import Node
from orchestrator.config.models import relative_path_problem
from orchestrator.config.project import Project
from orchestrator.errors import InputError
from orchestrator.render import frontdoor
from orchestrator.render.sandbox import run_budget
from orchestrator.render.services import Service, build_services, compose_service
from orchestrator.render.templates import render_template, role_env

HEADER = "# Rendered by swarm from roles/ and the inventory. Do not edit: run `swarm render`.\n"


@dataclass(frozen=True)
class NodeRender:
    """Everything that goes into one node's release, except the env files (secrets).

    `files` are relative to the release directory. With the node layout (`for_node=True`)
    each service's config files are also placed in a content-addressed store
    (`store`, relative to deploy_root: `configs/<service>/<digest>/...`) and bind-mounted
    from there, so a release that leaves a service's config unchanged does not change its
    compose definition, and compose does not recreate it.
    """

    node: Node
    services: tuple[Service, ...]
    files: dict[str, bytes]
    store: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)   # files and store paths whose role sets a mode

    def mode(self, path: str, default: int = 0o644) -> int:
        return self.modes.get(path, default)

    @property
    def compose_yaml(self) -> bytes:
        return self.files["compose.yml"]

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + self.files[path] + b"\0")
        return digest.hexdigest()


@dataclass(frozen=True)
class FleetRender:
    nodes: dict[str, NodeRender]

    def service(self, name: str) -> Service:
        for nr in self.nodes.values():
            for svc in nr.services:
                if svc.name == name:
                    return svc
        raise KeyError(name)

    def all_services(self) -> list[Service]:
        return [s for nr in self.nodes.values() for s in nr.services]


def fleet_view(services: list[Service]) -> dict[str, Any]:
    """What config templates see of the whole fleet (e.g. HAProxy's vLLM pool)."""
    items = [
        {"name": s.name, "role": s.role, "node": s.node, "address": s.address,
         "port": s.ports[0].port if s.ports else None, "target": s.ports[0].target if s.ports else None,
         "vars": _public_vars(s.vars)}
        for s in services
    ]
    by_role: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_role.setdefault(str(item["role"]), []).append(item)
    models = frontdoor.models(items)  # the front door's backend per served model
    return {"services": items, "by_role": by_role, "by_name": {i["name"]: i for i in items},
            "models": models, "frontdoor": frontdoor.catalogue(models),
            "routers": frontdoor.routers(services)}


def _public_vars(ctx: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ctx.items() if k not in {"node", "vault", "consul"}}


def render_fleet(project: Project, nodes: list[str] | None = None, *, for_node: bool = False,
                 services: list[Service] | None = None) -> FleetRender:
    """Each node's project; `services` (all of the playbook's, built once) when the caller has them."""
    services = build_services(project) if services is None else services
    fleet = fleet_view(services)
    names = nodes or list(project.inventory.nodes)
    out: dict[str, NodeRender] = {}
    with run_budget():  # the config files of every node share one budget (render/sandbox.py)
        for name in names:
            node = project.inventory.node(name)
            mine = tuple(s for s in services if s.node == name)
            out[name] = _render_node(project, node, mine, fleet, for_node)
    return FleetRender(nodes=out)


def _render_node(project: Project, node: Node, services: tuple[Service, ...],
                 fleet: dict[str, Any], for_node: bool) -> NodeRender:
    files: dict[str, bytes] = {}
    store: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    placed: list[Service] = []
    for svc in services:
        configs = _service_configs(project, svc, fleet)
        file_modes = {t.dest: t.mode for t in project.roles[svc.role].spec.templates}
        for dest, data in configs.items():
            files[f"config/{svc.name}/{dest}"] = data
            modes[f"config/{svc.name}/{dest}"] = file_modes[dest]
        if for_node and configs:
            digest = _digest(configs, file_modes)[:16]
            config_dir = f"{node.deploy_root}/configs/{svc.name}/{digest}"
            for dest, data in configs.items():
                store[f"configs/{svc.name}/{digest}/{dest}"] = data
                modes[f"configs/{svc.name}/{digest}/{dest}"] = file_modes[dest]
            if svc.rollout.reloads:  # it mounts configs/<svc>/live, which a reload refills in place
                config_dir = f"{node.deploy_root}/configs/{svc.name}/{LIVE}"
            svc = _with_config_dir(project, svc, config_dir, digest)
        placed.append(svc)
    files["compose.yml"] = compose_text(project, node, tuple(placed)).encode()
    for path in (*files, *store):
        problem = relative_path_problem(path)
        if problem:  # dests are checked when roles load; this guards the tree itself
            raise InputError(f"{node.name}: refusing to write {path!r}: {problem}")
    return NodeRender(node=node, services=tuple(placed), files=dict(sorted(files.items())),
                      store=dict(sorted(store.items())),
                      modes={p: m for p, m in sorted(modes.items()) if m != 0o644})


def _service_configs(project: Project, svc: Service, fleet: dict[str, Any]) -> dict[str, bytes]:
    role = project.roles[svc.role]
    env = role_env(role)
    return {tpl.dest: render_template(env, role, tpl.src, {**svc.vars, "fleet": fleet}).encode()
            for tpl in role.spec.templates}


def _digest(files: dict[str, bytes], modes: dict[str, int] | None = None) -> str:
    """Content address of a service's config files; a mode other than 0644 is part of it."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name] + b"\0")
        mode = (modes or {}).get(name, 0o644)
        if mode != 0o644:
            h.update(f"mode {mode:o}\0".encode())
    return h.hexdigest()


def _with_config_dir(project: Project, svc: Service, config_dir: str, digest: str) -> Service:
    """The same service with its config bind mounts pointing into the node's config store
    (`config_digest` names the config it runs: part of a reloadable service's hash)."""
    _, instance = project.playbook.service(svc.name)
    role = project.roles[svc.role]
    node = project.inventory.node(svc.node)
    compose = compose_service(project, instance, role, node, {**svc.vars, "config_dir": config_dir},
                              svc.image, svc.ports)
    return replace(svc, vars={**svc.vars, "config_dir": config_dir, "config_digest": digest}, compose=compose)


def compose_text(project: Project, node: Node, services: tuple[Service, ...]) -> str:
    network = project.inventory.spec.network
    doc: dict[str, Any] = {"name": node.project, "services": {s.name: s.compose for s in services}}
    volumes = sorted({v.split(":")[0] for s in services for v in s.compose.get("volumes", [])
                      if not v.startswith((".", "/"))})
    doc["networks"] = {network.name: {"external": True, "name": network.name}}
    if volumes:
        doc["volumes"] = {v: {"name": v} for v in volumes}
    if not services:
        doc["services"] = {}
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    return HEADER + f"# node: {node.name} ({node.platform}, {node.address})\n" + body


def output_dir(value: Path | str | None, default: Path) -> Path:
    """The directory `swarm render --out` writes into: not empty, not a file, not a device."""
    if value is None:
        return default
    text = str(value)
    if not text.strip() or any(ord(c) < 32 for c in text):
        raise InputError(f"--out: expected a directory, got {text!r}")
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise InputError(f"--out: {path} exists and is not a directory")
    except OSError as exc:
        raise InputError(f"--out: cannot use {text!r}: {exc.strerror}") from None
    return path


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (shell scripts) as literal blocks, as a person would write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and value.endswith("\n") and " \n" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def write_tree(render: FleetRender, out_dir: Path) -> list[Path]:
    """Write every node's files under out_dir/<node>/; nothing is written outside out_dir."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        root = out_dir.resolve()
        written: list[Path] = []
        for name, nr in render.nodes.items():
            for rel, data in nr.files.items():
                path = _inside(root, f"{name}/{rel}")
                if not path.exists() or path.read_bytes() != data:
                    path.write_bytes(data)
                    written.append(out_dir / name / rel)
    except OSError as exc:
        raise InputError(f"cannot write the rendered tree under {out_dir}: {exc.strerror}") from None
    return written


def _inside(root: Path, rel: str) -> Path:
    """root/rel, refusing a path (or a symlink on the way) that leads outside root."""
    problem = relative_path_problem(rel)
    if problem:
        raise InputError(f"refusing to write {rel!r} under {root}: {problem}")
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or not path.parent.resolve().is_relative_to(root):
        raise InputError(f"refusing to write {path}: it leads outside {root} (a symlink?)")
    if path.exists() and not path.is_file():
        raise InputError(f"refusing to write {path}: it is not a regular file")
    return path


def stale_files(render: FleetRender, out_dir: Path) -> list[str]:
    """Paths under out_dir that differ from what rendering produces now (missing/extra too)."""
    try:
        return _stale(render, out_dir)
    except OSError as exc:
        raise InputError(f"cannot read the rendered tree under {out_dir}: {exc.strerror}") from None


def _stale(render: FleetRender, out_dir: Path) -> list[str]:
    expected = {f"{name}/{rel}": data for name, nr in render.nodes.items() for rel, data in nr.files.items()}
    stale = [p for p, data in expected.items()
             if not (out_dir / p).is_file() or (out_dir / p).read_bytes() != data]
    if out_dir.is_dir():
        present = {str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()}
        stale += sorted(present - set(expected))
    return sorted(stale)
