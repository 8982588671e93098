"""Services: a role + instance vars -> one concrete service (compose definition, ports,
probes, Consul registration) for its node. Variables merge as in Ansible; see instance_vars."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError, field_validator

from orchestrator.clients.images import mirrored
from orchestrator.config.inventory import Node
from orchestrator.config.models import Model, parse_duration
from orchestrator.config.playbook import Phase, ServiceInstance
from orchestrator.config.project import Project
from orchestrator.config.roles import ConsulSpec, HealthcheckSpec, ProbeSpec, Role
from orchestrator.config.yamlfile import format_loc
from orchestrator.errors import InputError
from orchestrator.render.templates import render_value


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
    compose = compose_service(project, svc, role, node, ctx, image, ports)
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


def compose_service(project: Project, svc: ServiceInstance, role: Role, node: Node,
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


def build_services(project: Project) -> list[Service]:
    return [build_service(project, phase, svc) for phase, svc in project.playbook.all_services()]

