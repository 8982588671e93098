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

import jinja2
import yaml
from pydantic import ValidationError, field_validator

from orchestrator.clients.images import mirrored
from orchestrator.config.inventory import Node
from orchestrator.config.models import Model, parse_duration
from orchestrator.config.playbook import Phase, ServiceInstance
from orchestrator.config.project import Project
from orchestrator.config.roles import ConsulSpec, HealthcheckSpec, ProbeSpec, Role
from orchestrator.config.yamlfile import format_loc
from orchestrator.errors import InputError

HEADER = "# Rendered by swarm from roles/ and the inventory. Do not edit: run `swarm render`.\n"


# ---------------------------------------------------------------- concrete service


class Port(Model):
    port: int
    target: int
    protocol: str = "tcp"


class Probe(Model):
    kind: str
    port: int | None = None
    path: str = "/"
    status: int = 200
    json_field: dict[str, Any] = {}
    body_contains: str | None = None
    bearer_secret: str | None = None
    timeout: float = 5.0


class ConsulCheck(Model):
    kind: str
    port: int
    path: str = "/"
    interval: float = 10.0
    timeout: float = 5.0


class ConsulService(Model):
    name: str
    tags: list[str] = []
    meta: dict[str, str] = {}
    check: ConsulCheck | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("meta", mode="before")
    @classmethod
    def _meta(cls, value: Any) -> Any:
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value


@dataclass(frozen=True)
class Service:
    """One service instance, fully rendered for its node."""

    name: str
    role: str
    node: str
    address: str
    phase: int
    image: str
    upstream_image: str
    platform: str
    vars: dict[str, Any]
    ports: tuple[Port, ...]
    probes: tuple[Probe, ...]
    consul: ConsulService | None
    secret_env: dict[str, str]
    gpu: bool
    protected: bool
    ram_gb: float
    healthy_deadline: float | None
    min_healthy_time: float | None
    compose: dict[str, Any] = field(repr=False, compare=False)

    @property
    def has_healthcheck(self) -> bool:
        return "healthcheck" in self.compose


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


# ---------------------------------------------------------------- jinja


def _env(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - config files, not HTML
        loader=loader,
    )
    env.filters["to_yaml"] = lambda v: yaml.safe_dump(v, sort_keys=False, default_flow_style=False)
    env.filters["quote_haproxy"] = lambda v: '"' + str(v).replace('"', '\\"') + '"'
    return env


_STRING_ENV = _env()


def render_string(text: str, context: dict[str, Any], where: str) -> str:
    try:
        return _STRING_ENV.from_string(text).render(context)
    except jinja2.UndefinedError as exc:
        raise InputError(f"{exc.message} (in {text!r})", file=where) from None
    except jinja2.TemplateError as exc:
        raise InputError(f"template error: {exc} (in {text!r})", file=where) from None


def render_value(value: Any, context: dict[str, Any], where: str, loc: tuple[str | int, ...] = ()) -> Any:
    """Render every string inside `value`; a string that is only one expression keeps its type."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        here = f"{where}: {format_loc(loc)}" if loc else where
        out = render_string(value, context, here)
        return _native(out) if _is_single_expr(value) else out
    if isinstance(value, dict):
        return {k: render_value(v, context, where, loc + (k,)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, context, where, loc + (i,)) for i, v in enumerate(value)]
    return value


def _is_single_expr(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1


def _native(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | bool) and not isinstance(value, bool) else text


# ---------------------------------------------------------------- vars


def instance_vars(project: Project, svc: ServiceInstance, role: Role, node: Node) -> dict[str, Any]:
    """role defaults < fleet/group/host vars < playbook service vars < node.services[name]."""
    merged: dict[str, Any] = dict(role.spec.defaults)
    merged.update(node.vars)
    merged.update(svc.vars)
    merged.update(node.service_vars(svc.name))
    missing = [v for v in role.spec.required_vars if v not in merged or merged[v] in (None, "")]
    if missing:
        raise InputError(
            f"service {svc.name!r} (role {role.name}) on {node.name} needs vars: "
            f"{', '.join(missing)} — set them in the playbook or nodes.{node.name}.services.{svc.name}",
            file=str(project.inventory.path),
        )
    builtins = _builtins(project, svc, node)
    context = {**builtins, **merged}
    where = f"{role.file} (service {svc.name} on {node.name})"
    for _ in range(3):  # vars may refer to other vars: `served_model_name: "{{ model }}"`
        rendered = render_value(merged, context, where)
        if rendered == merged:
            break
        merged = rendered
        context = {**builtins, **merged}
    return {**builtins, **merged}


def _builtins(project: Project, svc: ServiceInstance, node: Node) -> dict[str, Any]:
    inv = project.inventory.spec
    return {
        "instance": svc.name,
        "node": {"name": node.name, "address": node.address, "arch": node.arch,
                 "platform": node.platform, "gpus": [g.model_dump() for g in node.gpus]},
        "network": inv.network.model_dump(),
        "deploy_root": node.deploy_root,
        "config_dir": f"./config/{svc.name}",
        "fleet_name": inv.fleet,
        "thermal_limit_c": node.thermal_limit_c,
        "nodes": {n.name: {"address": n.address, "arch": n.arch} for n in project.inventory.nodes.values()},
        "vault": inv.vault.model_dump(),
        "consul": inv.consul.model_dump(),
    }


# ---------------------------------------------------------------- services


def build_service(project: Project, phase: Phase, svc: ServiceInstance) -> Service:
    role = project.roles[svc.role]
    node = project.inventory.node(svc.host)
    ctx = instance_vars(project, svc, role, node)
    where = str(role.file)
    spec = role.spec
    image_ref = spec.image.by_arch.get(node.arch, spec.image.name)
    upstream = str(render_value(image_ref, ctx, where, ("image", "name")))
    image = mirrored(upstream, project.inventory.spec.registry.mirror)
    try:
        ports = tuple(Port.model_validate(_port_data(p.model_dump(), ctx, where, i))
                      for i, p in enumerate(spec.ports) if _enabled(p.when, ctx, where, i))
        probes = tuple(_probe(p, ctx, where, i, ports) for i, p in enumerate(spec.health.probes))
        consul = _consul(spec.consul, ctx, where, svc.name, ports)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise InputError(f"{format_loc(err['loc'])}: {err['msg']} after rendering (service {svc.name})", file=where) from None
    compose = _compose_service(project, svc, role, node, ctx, image, ports)
    return Service(
        name=svc.name, role=role.name, node=node.name, address=node.address, phase=phase.id,
        image=image, upstream_image=upstream, platform=node.platform,
        vars={k: v for k, v in ctx.items()}, ports=ports, probes=probes, consul=consul,
        secret_env=dict(spec.secret_env), gpu=spec.gpu, protected=node.is_protected(svc.name),
        ram_gb=spec.resources.ram_gb,
        healthy_deadline=_duration_var(ctx, "healthy_deadline", spec.health.healthy_deadline, where),
        min_healthy_time=_duration_var(ctx, "min_healthy_time", spec.health.min_healthy_time, where),
        compose=compose,
    )


def _duration_var(ctx: dict[str, Any], key: str, default: float | None, where: str) -> float | None:
    """Per-instance override of a role's gate timing (e.g. a short deadline in the lab)."""
    if key not in ctx or ctx[key] is None:
        return default
    try:
        return parse_duration(ctx[key])
    except ValueError as exc:
        raise InputError(f"{key}: {exc}", file=where) from None


def _enabled(when: bool | str, ctx: dict[str, Any], where: str, i: int) -> bool:
    if isinstance(when, bool):
        return when
    value = render_value(when, ctx, where, ("ports", i, "when"))
    return str(value).strip().lower() not in {"", "false", "0", "no", "none"}


def _port_data(data: dict[str, Any], ctx: dict[str, Any], where: str, i: int) -> dict[str, Any]:
    data.pop("when", None)
    return dict(render_value(data, ctx, where, ("ports", i)))


def _probe(p: ProbeSpec, ctx: dict[str, Any], where: str, i: int, ports: tuple[Port, ...]) -> Probe:
    data = render_value(p.model_dump(), ctx, where, ("health", "probes", i))
    if data.get("port") is None and p.kind in {"http", "tcp"}:
        if not ports:
            raise InputError(f"health.probes[{i}]: an {p.kind} probe needs a port", file=where)
        data["port"] = ports[0].port
    return Probe.model_validate(data)


def _consul(spec: ConsulSpec | None, ctx: dict[str, Any], where: str, name: str,
            ports: tuple[Port, ...]) -> ConsulService | None:
    if spec is None:
        return None
    data = render_value(spec.model_dump(), ctx, where, ("consul",))
    data["name"] = data.get("name") or name
    return ConsulService.model_validate(data)


def _healthcheck(hc: HealthcheckSpec, ctx: dict[str, Any], where: str) -> dict[str, Any]:
    test = [str(t) for t in render_value(hc.test, ctx, where, ("healthcheck", "test"))]
    return {
        "test": ["CMD-SHELL", " ".join(test)] if hc.shell else ["CMD", *test],
        "interval": _dur(hc.interval),
        "timeout": _dur(hc.timeout),
        "retries": hc.retries,
        "start_period": _dur(hc.start_period),
    }


def _dur(seconds: float) -> str:
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


def _compose_service(project: Project, svc: ServiceInstance, role: Role, node: Node,
                     ctx: dict[str, Any], image: str, ports: tuple[Port, ...]) -> dict[str, Any]:
    spec, where = role.spec, str(role.file)
    out: dict[str, Any] = {"image": image, "platform": node.platform}
    if spec.entrypoint is not None:
        out["entrypoint"] = render_value(spec.entrypoint, ctx, where, ("entrypoint",))
    if spec.command is not None:
        out["command"] = [str(c) for c in render_value(spec.command, ctx, where, ("command",)) if str(c) != ""]
    if spec.user:
        out["user"] = render_value(spec.user, ctx, where, ("user",))
    env = {k: _env_str(v) for k, v in render_value(spec.env, ctx, where, ("env",)).items() if v is not None}
    if spec.gpu:
        gpu_index = ctx.get("gpu", 0)
        out["runtime"] = "nvidia"
        env.update({"NVIDIA_VISIBLE_DEVICES": str(gpu_index), "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"})
    env.update({k: _env_str(v) for k, v in dict(ctx.get("extra_env", {}) or {}).items()})
    if env:
        out["environment"] = dict(sorted(env.items()))
    if spec.secret_env:
        out["env_file"] = [f"./env/{svc.name}.env"]
    if ports:
        out["ports"] = [f"{p.port}:{p.target}" + ("/udp" if p.protocol == "udp" else "") for p in ports]
    if spec.volumes:
        volumes = [str(v) for v in render_value(spec.volumes, ctx, where, ("volumes",)) if str(v) != ""]
        if volumes:
            out["volumes"] = volumes
    if spec.healthcheck:
        out["healthcheck"] = _healthcheck(spec.healthcheck, ctx, where)
    out["restart"] = spec.restart
    _limits(out, spec.limits.cpus, spec.limits.memory, ctx, where, node.spec.cpus)
    for key in ("shm_size", "read_only"):
        value = getattr(spec, key)
        if value:
            out[key] = value
    if spec.tmpfs:
        out["tmpfs"] = list(spec.tmpfs)
    if spec.cap_add:
        out["cap_add"] = list(spec.cap_add)
    if spec.ulimits:
        out["ulimits"] = render_value(spec.ulimits, ctx, where, ("ulimits",))
    deps = [d for d in svc.depends_on if _same_node(project, d, node.name)]
    if deps:
        out["depends_on"] = deps
    out["networks"] = [project.inventory.spec.network.name]
    out["labels"] = {
        "org.swarm.service": svc.name,
        "org.swarm.role": role.name,
        "org.swarm.node": node.name,
        "org.swarm.protected": "true" if node.is_protected(svc.name) else "false",
    }
    out["logging"] = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
    return out


def _env_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _limits(out: dict[str, Any], cpus: Any, memory: Any, ctx: dict[str, Any], where: str,
            node_cpus: float | None) -> None:
    limits: dict[str, Any] = {}
    if cpus is not None:
        value = float(render_value(cpus, ctx, where, ("limits", "cpus")))
        if node_cpus is not None:  # docker refuses a limit above the machine's cores
            value = min(value, node_cpus)
        limits["cpus"] = f"{value:g}"
    if memory is not None:
        limits["memory"] = str(render_value(memory, ctx, where, ("limits", "memory")))
    if limits:
        out["deploy"] = {"resources": {"limits": limits}}


def _same_node(project: Project, service: str, node: str) -> bool:
    _, svc = project.playbook.service(service)
    return svc.host == node


# ---------------------------------------------------------------- fleet view + files


def build_services(project: Project) -> list[Service]:
    return [build_service(project, phase, svc) for phase, svc in project.playbook.all_services()]


def fleet_view(services: list[Service]) -> dict[str, Any]:
    """What config templates see of the whole fleet (e.g. HAProxy's vLLM pool)."""
    items = [
        {"name": s.name, "role": s.role, "node": s.node, "address": s.address,
         "port": s.ports[0].port if s.ports else None, "vars": _public_vars(s.vars)}
        for s in services
    ]
    by_role: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_role.setdefault(str(item["role"]), []).append(item)
    return {"services": items, "by_role": by_role, "by_name": {i["name"]: i for i in items}}


def _public_vars(ctx: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ctx.items() if k not in {"node", "vault", "consul"}}


def render_fleet(project: Project, nodes: list[str] | None = None, *, for_node: bool = False) -> FleetRender:
    services = build_services(project)
    fleet = fleet_view(services)
    names = nodes or list(project.inventory.nodes)
    out: dict[str, NodeRender] = {}
    for name in names:
        node = project.inventory.node(name)
        mine = tuple(s for s in services if s.node == name)
        out[name] = _render_node(project, node, mine, fleet, for_node)
    return FleetRender(nodes=out)


def _render_node(project: Project, node: Node, services: tuple[Service, ...],
                 fleet: dict[str, Any], for_node: bool) -> NodeRender:
    files: dict[str, bytes] = {}
    store: dict[str, bytes] = {}
    placed: list[Service] = []
    for svc in services:
        configs = _service_configs(project, svc, fleet)
        for dest, data in configs.items():
            files[f"config/{svc.name}/{dest}"] = data
        if for_node and configs:
            config_dir = f"{node.deploy_root}/configs/{svc.name}/{_digest(configs)[:16]}"
            for dest, data in configs.items():
                store[f"configs/{svc.name}/{_digest(configs)[:16]}/{dest}"] = data
            svc = _with_config_dir(project, svc, config_dir)
        placed.append(svc)
    files["compose.yml"] = compose_text(project, node, tuple(placed)).encode()
    return NodeRender(node=node, services=tuple(placed), files=dict(sorted(files.items())),
                      store=dict(sorted(store.items())))


def _service_configs(project: Project, svc: Service, fleet: dict[str, Any]) -> dict[str, bytes]:
    role = project.roles[svc.role]
    env = _env(jinja2.FileSystemLoader(str(role.dir)))
    return {tpl.dest: _render_template(env, role, tpl.src, {**svc.vars, "fleet": fleet}).encode()
            for tpl in role.spec.templates}


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name] + b"\0")
    return h.hexdigest()


def _with_config_dir(project: Project, svc: Service, config_dir: str) -> Service:
    """The same service with its config bind mounts pointing into the node's config store."""
    _, instance = project.playbook.service(svc.name)
    role = project.roles[svc.role]
    node = project.inventory.node(svc.node)
    ctx = {**svc.vars, "config_dir": config_dir}
    compose = _compose_service(project, instance, role, node, ctx, svc.image, svc.ports)
    return replace(svc, vars=ctx, compose=compose)


def _render_template(env: jinja2.Environment, role: Role, src: str, ctx: dict[str, Any]) -> str:
    try:
        return env.get_template(src).render(ctx)
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, src)
        raise InputError(f"{exc.message}", file=f"{role.dir / src}{line}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"template syntax error: {exc.message}", file=f"{role.dir / src}:{exc.lineno}") from None


def _template_line(exc: BaseException, src: str) -> str:
    tb = exc.__traceback__
    line = ""
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(src):
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line


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
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)
    return HEADER + f"# node: {node.name} ({node.platform}, {node.address})\n" + body


# ---------------------------------------------------------------- on disk


def write_tree(render: FleetRender, out_dir: Path) -> list[Path]:
    written: list[Path] = []
    for name, nr in render.nodes.items():
        for rel, data in nr.files.items():
            path = out_dir / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
                written.append(path)
    return written


def stale_files(render: FleetRender, out_dir: Path) -> list[str]:
    """Paths under out_dir that differ from what rendering produces now (missing/extra too)."""
    expected = {f"{name}/{rel}": data for name, nr in render.nodes.items() for rel, data in nr.files.items()}
    stale = [p for p, data in expected.items()
             if not (out_dir / p).is_file() or (out_dir / p).read_bytes() != data]
    if out_dir.is_dir():
        present = {str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()}
        stale += sorted(present - set(expected))
    return sorted(stale)
