"""Services: a role + instance vars -> one concrete service (compose definition, ports,
probes, Consul registration) for its node. Variables merge as in Ansible; see instance_vars.

This is where the values of a service are checked in their final, rendered form: its
settings against the role's declared forms (`config/settings.py`), its image reference,
ports (1..65535, one owner per host port and protocol on a node), env names, limits,
gate timings. Every problem is blamed on the file, line and key that set the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from orchestrator.addresses import host_port
from orchestrator.clients.images import mirrored, parse_image_ref
from orchestrator.config.inventory import Node, did_you_mean
from orchestrator.config.models import Model, is_env_name, is_ip, parse_duration
from orchestrator.config.playbook import Phase, ServiceInstance
from orchestrator.config.project import Project
from orchestrator.config.roles import ConsulSpec, HealthcheckSpec, ProbeSpec, Role, secret_names
from orchestrator.config.rollout import Rollout
from orchestrator.config.rollout import resolve as resolve_rollout
from orchestrator.config.settings import Origin, SettingSpec, role_settings, unsafe_text
from orchestrator.config.yamlfile import PathKey, describe_error, format_loc, show_value
from orchestrator.errors import InputError
from orchestrator.render.sandbox import run_budget
from orchestrator.render.templates import Where, render_value
from orchestrator.render.weights import (
    NO_WEIGHTS,
    WeightsPin,
    catalogue_path,
    catalogue_revisions,
    pin_for,
)

LOOPBACK = "127.0.0.1"


class Port(Model):
    port: int = Field(ge=1, le=65535)
    target: int = Field(ge=1, le=65535)
    protocol: str = "tcp"
    host_ip: str = ""
    reach: Literal["public", "fleet", "node"] = "fleet"   # who may reach it (config/roles.PortSpec)

    @field_validator("host_ip")
    @classmethod
    def _host_ip(cls, value: str) -> str:
        if value and not is_ip(value):
            raise ValueError(f"a published port binds to an IP address (or \"\" for every interface), "
                             f"got {show_value(value)}")
        return value


class Probe(Model):
    kind: str
    port: int | None = Field(None, ge=1, le=65535)
    scheme: str = "http"
    path: str = "/"
    status: int = 200
    json_field: dict[str, Any] = {}
    body_contains: str | None = None
    bearer_secret: str | None = None
    timeout: float = 5.0

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value not in ("http", "https"):
            raise ValueError(f"a probe scheme is http or https, got {show_value(value)}")
        return value


class ConsulCheck(Model):
    kind: str
    port: int = Field(ge=1, le=65535)
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
    rollout: Rollout = field(default_factory=Rollout, compare=False)   # how a change is put in place
    weights: WeightsPin | None = None   # the model it serves, staged in the node's store

    @property
    def has_healthcheck(self) -> bool:
        return "healthcheck" in self.compose

    @property
    def secrets_used(self) -> set[str]:
        """The playbook secrets it needs: its env file's references and its probes' bearer keys."""
        names = {name for ref in self.secret_env.values() for name in secret_names(ref)}
        return names | {p.bearer_secret for p in self.probes if p.bearer_secret}


def secrets_of(services: Iterable[Service]) -> set[str]:
    """Every playbook secret these services need (what a run reads from Vault)."""
    return {name for svc in services for name in svc.secrets_used}


def probe_keys(services: Iterable[Service]) -> set[str]:
    """The secrets the services' health probes send (bearer keys): all a gate needs."""
    return {p.bearer_secret for svc in services for p in svc.probes if p.bearer_secret}


# ---------------------------------------------------------------- variables


@dataclass(frozen=True)
class Settings:
    """An instance's merged variables, where each came from, and the forms they must have."""

    values: dict[str, Any]
    origins: dict[str, Origin]
    specs: dict[str, SettingSpec]

    def blame(self, key: str, problem: str, default: str) -> InputError:
        origin = self.origins.get(key)
        if origin is None:
            return InputError(f"{key}: {problem}", file=default)
        message, file = origin.blame(problem)
        return InputError(message, file=file)


def merge_settings(project: Project, svc: ServiceInstance, role: Role, node: Node) -> Settings:
    """role defaults < fleet/group/host vars < playbook service vars < node.services[name]."""
    inv, book = project.inventory, project.playbook
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}

    def layer(table: dict[str, Any], source: Any, prefix: PathKey) -> None:
        for key, value in table.items():
            values[key] = value
            origins[key] = Origin(source, (*prefix, key))

    layer(role.spec.defaults, role, ("defaults",))
    for key, value in node.vars.items():
        values[key] = value
        origins[key] = Origin(inv, node.var_origins.get(key, ("nodes", node.name, "vars", key)))
    layer(svc.vars, book, (*book.loc_of(svc.name), "vars"))
    layer(node.service_vars(svc.name), inv, ("nodes", node.name, "services", svc.name))
    for key in values.keys() & BUILTIN_NAMES:
        message, file = origins[key].blame(f"`{key}` is set by swarm for every service (see docs/validation.md): "
                                           "give this variable another name")
        raise InputError(message, file=file)
    specs = role_settings(role.spec.defaults, role.spec.required_vars, role.spec.settings)
    return Settings(values=values, origins=origins, specs=specs)


BUILTIN_NAMES = frozenset({"instance", "node", "network", "deploy_root", "config_dir", "run_dir", "fleet_name",
                           "thermal_limit_c", "nodes", "vault", "consul", "fleet", "secrets", "weights"})
"""What templates get from swarm itself (`_builtins`, plus `fleet` in config files and `secrets`
in secret_env): a variable of the same name would silently replace it."""


def check_unknown(project: Project, svc: ServiceInstance, role: Role, node: Node,
                  specs: dict[str, SettingSpec]) -> None:
    """Keys set for this one instance must be settings its role knows: anything else is a typo."""
    book, inv = project.playbook, project.inventory
    places: list[tuple[Any, PathKey, dict[str, Any]]] = [
        (book, (*book.loc_of(svc.name), "vars"), svc.vars),
        (inv, ("nodes", node.name, "services", svc.name), node.service_vars(svc.name))]
    for source, prefix, table in places:
        for key in table:
            if key not in specs:
                loc = (*prefix, key)
                raise InputError(
                    f"{format_loc(loc)}: unknown setting `{key}` for role {role.name}"
                    f"{did_you_mean(key, specs)}", file=source.where(loc))


def instance_vars(project: Project, svc: ServiceInstance, role: Role, node: Node) -> dict[str, Any]:
    """The instance's variables, rendered and checked; builtins (node, instance, ...) included."""
    settings = merge_settings(project, svc, role, node)
    check_unknown(project, svc, role, node, settings.specs)
    merged = settings.values
    missing = [v for v in role.spec.required_vars if v not in merged or merged[v] in (None, "")]
    if missing:
        loc = project.playbook.loc_of(svc.name)
        raise InputError(
            f"{format_loc(loc)}: service {svc.name!r} (role {role.name}) on {node.name} needs vars: "
            f"{', '.join(missing)} — set them in {format_loc((*loc, 'vars'))} or "
            f"nodes.{node.name}.services.{svc.name}",
            file=project.playbook.where(loc),
        )
    builtins = _builtins(project, svc, node)
    context = {**builtins, **merged}
    for _ in range(3):  # vars may refer to other vars: `served_model_name: "{{ model }}"`
        rendered = {k: _render_setting(settings, k, v, context, role) for k, v in merged.items()}
        if rendered == merged:
            break
        merged = rendered
        context = {**builtins, **merged}
    return {**builtins, **_check_values(settings, merged, role)}


def _render_setting(settings: Settings, key: str, value: Any, context: dict[str, Any], role: Role) -> Any:
    origin = settings.origins.get(key)
    if origin is None:
        return render_value(value, context, str(role.file), (key,))
    return render_value(value, context, origin.source.where, origin.loc)


def _check_values(settings: Settings, values: dict[str, Any], role: Role) -> dict[str, Any]:
    """Every value against its setting's form, and every string in any variable (settings or
    not: a template may use any of them) free of control and bidi characters; the values as
    templates get them (`"8080"` -> 8080)."""
    for key, value in values.items():
        spec = settings.specs.get(key)
        problem = spec.problem(value) if spec is not None else unsafe_text(value)
        if problem:
            raise settings.blame(key, problem, str(role.file))
    extra = values.get("extra_env") or {}
    for name, value in extra.items():
        if not isinstance(name, str) or not is_env_name(name):
            raise settings.blame("extra_env", f"{show_value(name)} is not an environment variable name",
                                 str(role.file))
        if isinstance(value, dict | list):
            raise settings.blame("extra_env", f"{name}: expected a single value, got {show_value(value)}",
                                 str(role.file))
    return {k: settings.specs[k].canonical(v) if k in settings.specs else v for k, v in values.items()}


def _builtins(project: Project, svc: ServiceInstance, node: Node) -> dict[str, Any]:
    inv = project.inventory.spec
    return {
        "instance": svc.name,
        "node": {"name": node.name, "address": node.address, "bind_address": node.bind_address,
                 "arch": node.arch, "platform": node.platform, "gpus": [g.model_dump() for g in node.gpus]},
        "network": inv.network.model_dump(),
        "deploy_root": node.deploy_root,
        "config_dir": f"./config/{svc.name}",
        "run_dir": f"{node.deploy_root}/run/{svc.name}",   # the service's runtime dir (sockets, state)
        "fleet_name": inv.fleet,
        "thermal_limit_c": node.thermal_limit_c,
        "nodes": {n.name: {"address": n.address, "arch": n.arch} for n in project.inventory.nodes.values()},
        "vault": inv.vault.model_dump(),
        "consul": inv.consul.model_dump(),
    }


# ---------------------------------------------------------------- one service


def build_service(project: Project, phase: Phase, svc: ServiceInstance) -> Service:
    role = project.roles[svc.role]
    node = project.inventory.node(svc.host)
    ctx = instance_vars(project, svc, role, node)
    where = role.where
    spec = role.spec
    weights = _weights(role, ctx)
    ctx["weights"] = weights.as_vars(node.deploy_root) if weights else NO_WEIGHTS
    image_ref = spec.image.by_arch.get(node.arch, spec.image.name)
    image_loc = ("image", "by_arch", node.arch) if node.arch in spec.image.by_arch else ("image", "name")
    upstream = str(render_value(image_ref, ctx, where, image_loc))
    _check_image(upstream, role, image_loc, svc)
    image = mirrored(upstream, project.inventory.spec.registry.mirror)
    ports = tuple(_port(p.model_dump(), ctx, role, i, svc)
                  for i, p in enumerate(spec.ports) if _enabled(p.when, ctx, where, i))
    probes = tuple(_probe(p, ctx, role, i, ports) for i, p in enumerate(spec.health.probes))
    consul = _consul(spec.consul, ctx, role, svc.name)
    compose = compose_service(project, svc, role, node, ctx, image, ports)
    deadline = _duration_var(ctx, "healthy_deadline", spec.health.healthy_deadline, role)
    min_healthy = _duration_var(ctx, "min_healthy_time", spec.health.min_healthy_time, role)
    _check_gate(project, phase, svc, role, ctx, deadline, min_healthy)
    return Service(
        name=svc.name, role=role.name, node=node.name, address=node.address, phase=phase.id,
        image=image, upstream_image=upstream, platform=node.platform,
        vars=dict(ctx), ports=ports, probes=probes, consul=consul,
        secret_env=dict(spec.secret_env), gpu=spec.gpu, protected=node.is_protected(svc.name),
        ram_gb=spec.resources.ram_gb, healthy_deadline=deadline, min_healthy_time=min_healthy,
        compose=compose, rollout=_rollout(spec, ctx, role), weights=weights,
    )


def _weights(role: Role, ctx: dict[str, Any]) -> WeightsPin | None:
    """The model the instance serves, pinned by its own `revision` or the role's catalogue."""
    spec = role.spec.weights
    if spec is None:
        return None
    repo = str(render_value(spec.repo, ctx, role.where, ("weights", "repo")))
    revision = render_value(spec.revision, ctx, role.where, ("weights", "revision")) if spec.revision else None
    try:
        return pin_for(repo, str(revision) if revision else None, catalogue_revisions(catalogue_path(role.dir)))
    except ValueError as exc:
        raise InputError(f"weights: {exc} (service {ctx.get('instance')})", file=role.where(("weights",))) from None


def _rollout(spec: Any, ctx: dict[str, Any], role: Role) -> Rollout:
    """How a change of this instance is put in place (config/rollout.py)."""
    def render(value: Any, key: str) -> Any:
        return render_value(value, ctx, role.where, ("rollout", key))

    return resolve_rollout(spec.rollout, render, str(role.file), str(ctx["run_dir"]))


def _check_image(ref: str, role: Role, loc: PathKey, svc: ServiceInstance) -> None:
    if not ref.strip() or any(c.isspace() or ord(c) < 32 for c in ref):
        raise InputError(f"{format_loc(loc)}: the image reference of {svc.name} is {show_value(ref)} after "
                         "rendering: expected e.g. vllm/vllm-openai:v0.6.3", file=role.where(loc))
    try:
        parse_image_ref(ref)
    except InputError as exc:
        raise InputError(f"{format_loc(loc)}: {exc.message} (service {svc.name})", file=role.where(loc),
                         hint=exc.hint) from None


def _invalid(exc: ValidationError, role: Role, prefix: PathKey, svc: str) -> InputError:
    err = exc.errors(include_url=False)[0]
    loc = (*prefix, *(p for p in err["loc"] if isinstance(p, str | int)))
    return InputError(f"{format_loc(loc)}: {describe_error(err)} after rendering (service {svc})",
                      file=role.where(loc))


def _duration_var(ctx: dict[str, Any], key: str, default: float | None, role: Role) -> float | None:
    """Per-instance override of a role's gate timing (checked with the settings)."""
    if key not in ctx or ctx[key] is None:
        return default
    try:
        return parse_duration(ctx[key])
    except ValueError as exc:
        raise InputError(f"{key}: {exc}", file=str(role.file)) from None


def _check_gate(project: Project, phase: Phase, svc: ServiceInstance, role: Role, ctx: dict[str, Any],
                deadline: float | None, min_healthy: float | None) -> None:
    """The gate's own arithmetic (engine/gate.py): min_healthy_time must fit in the deadline."""
    gate = phase.spec.gate
    own_deadline = ctx.get("healthy_deadline") is not None
    effective = (deadline or 0.0) if own_deadline else max(gate.healthy_deadline, deadline or 0.0)
    needed = min_healthy if min_healthy is not None else gate.min_healthy_time
    if needed > effective:
        key = "min_healthy_time" if ctx.get("min_healthy_time") is not None else "healthy_deadline"
        loc = (*project.playbook.loc_of(svc.name), "vars", key)
        raise InputError(
            f"{format_loc(loc)}: service {svc.name} must stay healthy for {needed:g}s but its gate gives "
            f"up after {effective:g}s: min_healthy_time must be at most healthy_deadline",
            file=project.playbook.where(loc))


def _enabled(when: bool | str, ctx: dict[str, Any], where: Where, i: int) -> bool:
    if isinstance(when, bool):
        return when
    value = render_value(when, ctx, where, ("ports", i, "when"))
    return str(value).strip().lower() not in {"", "false", "0", "no", "none"}


def _port(data: dict[str, Any], ctx: dict[str, Any], role: Role, i: int, svc: ServiceInstance) -> Port:
    data.pop("when", None)
    for key in ("host_ip", "reach"):
        if data.get(key) is None:
            data.pop(key, None)
    rendered = dict(render_value(data, ctx, role.where, ("ports", i)))
    if "host_ip" not in rendered:  # where it is published follows who may reach it
        node = ctx.get("node") or {}
        rendered["host_ip"] = LOOPBACK if rendered.get("reach") == "node" else str(node.get("bind_address", ""))
    for key in ("port", "target"):
        rendered[key] = _int_text(rendered.get(key))
    try:
        return Port.model_validate(rendered)
    except ValidationError as exc:
        raise _invalid(exc, role, ("ports", i), svc.name) from None


def _int_text(value: Any) -> Any:
    """A port rendered from text ("8080") is the number; anything else ("0443": octal to YAML
    1.1) is left to validation, which refuses it."""
    if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]{0,4}", value.strip()):
        return int(value)
    return value


def _probe(p: ProbeSpec, ctx: dict[str, Any], role: Role, i: int, ports: tuple[Port, ...]) -> Probe:
    data = render_value(p.model_dump(), ctx, role.where, ("health", "probes", i))
    if data.get("port") is None and p.kind in {"http", "tcp"}:
        if not ports:
            raise InputError(f"health.probes[{i}]: an {p.kind} probe needs a port",
                             file=role.where(("health", "probes", i)))
        data["port"] = ports[0].port
    data["port"] = _int_text(data.get("port"))
    try:
        return Probe.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, role, ("health", "probes", i), str(ctx.get("instance"))) from None


def _consul(spec: ConsulSpec | None, ctx: dict[str, Any], role: Role, name: str) -> ConsulService | None:
    if spec is None:
        return None
    data = render_value(spec.model_dump(), ctx, role.where, ("consul",))
    data["name"] = data.get("name") or name
    if isinstance(data.get("check"), dict):
        data["check"]["port"] = _int_text(data["check"].get("port"))
    try:
        return ConsulService.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, role, ("consul",), name) from None


def _healthcheck(hc: HealthcheckSpec, ctx: dict[str, Any], where: Where) -> dict[str, Any]:
    test = [str(t) for t in render_value(hc.test, ctx, where, ("healthcheck", "test")) if str(t) != ""]
    return {
        "test": ["CMD-SHELL", " ".join(test)] if hc.shell else ["CMD", *test],
        "interval": _dur(hc.interval),
        "timeout": _dur(hc.timeout),
        "retries": hc.retries,
        "start_period": _dur(hc.start_period),
    }


def _dur(seconds: float) -> str:
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


# ---------------------------------------------------------------- compose


def compose_service(project: Project, svc: ServiceInstance, role: Role, node: Node,
                    ctx: dict[str, Any], image: str, ports: tuple[Port, ...]) -> dict[str, Any]:
    """The service's compose definition. A role's own text is compose syntax (`$$` for a `$`
    the container should see); every value from the context is data, so its `$` is doubled
    (`compose_literal`) and compose never expands it from the node's environment."""
    spec, where = role.spec, role.where
    ctx = compose_literal(ctx)
    out: dict[str, Any] = {"image": image, "platform": node.platform}
    if spec.entrypoint is not None:
        out["entrypoint"] = _argv(render_value(spec.entrypoint, ctx, where, ("entrypoint",)), role, "entrypoint")
    if spec.command is not None:
        out["command"] = _argv(render_value(spec.command, ctx, where, ("command",)), role, "command")
    if spec.user:
        out["user"] = _user(render_value(spec.user, ctx, where, ("user",)), role)
    env = {k: _env_str(v) for k, v in render_value(spec.env, ctx, where, ("env",)).items() if v is not None}
    if spec.gpu:
        out["runtime"] = "nvidia"
        env.update({"NVIDIA_VISIBLE_DEVICES": str(ctx.get("gpu", 0)), "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"})
    env.update({k: _env_str(v) for k, v in dict(ctx.get("extra_env", {}) or {}).items()})
    if env:
        out["environment"] = dict(sorted(env.items()))
    if spec.secret_env:
        out["env_file"] = [f"./env/{svc.name}.env"]
    if ports:
        out["ports"] = [_port_text(p) for p in ports]
    if spec.volumes:
        volumes = [str(v) for v in render_value(spec.volumes, ctx, where, ("volumes",)) if str(v) != ""]
        _check_lines(volumes, role, "volumes")
        if volumes:
            out["volumes"] = volumes
    if spec.healthcheck:
        out["healthcheck"] = _healthcheck(spec.healthcheck, ctx, where)
    out["restart"] = spec.restart
    grace = _rollout(spec, ctx, role).stop_grace
    if grace is not None:  # how long the container may take to exit after SIGTERM (then SIGKILL)
        out["stop_grace_period"] = f"{grace:g}s"
    _limits(out, spec.limits.cpus, spec.limits.memory, ctx, role, node.spec.cpus)
    if spec.shm_size:
        out["shm_size"] = _size(render_value(spec.shm_size, ctx, where, ("shm_size",)), role, ("shm_size",))
    if spec.read_only:
        out["read_only"] = True
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


def compose_literal(value: Any) -> Any:
    """`value` with every `$` of every string doubled: compose reads `$$` as one `$`, and
    `$HOME`, `${PATH:-z}` or `${UNSET:?boom}` as interpolation from the node's environment."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: compose_literal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [compose_literal(v) for v in value]
    return value


def _port_text(p: Port) -> str:
    published = host_port(p.host_ip, p.port) if p.host_ip else str(p.port)
    return f"{published}:{p.target}" + ("/udp" if p.protocol == "udp" else "")


def _argv(items: Any, role: Role, key: str) -> list[str]:
    out = [str(c) for c in items if str(c) != ""]
    for i, item in enumerate(out):
        if "\0" in item:
            raise InputError(f"{key}[{i}]: an argument cannot hold a NUL byte", file=role.where((key,)))
    return out


def _check_lines(items: list[str], role: Role, key: str) -> None:
    for i, item in enumerate(items):
        if any(ord(c) < 32 for c in item):
            raise InputError(f"{key}[{i}]: control characters (a newline?) in {show_value(item)} after rendering",
                             file=role.where((key, i)))


_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")


def _user(value: Any, role: Role) -> str:
    text = str(value)
    if not _USER.fullmatch(text):
        raise InputError(f"user: expected uid[:gid] or a user name, got {show_value(text)}", file=role.where(("user",)))
    return text


def _env_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_SIZE = re.compile(r"\d{1,15}(?:\.\d{1,6})?\s?(?:[kKmMgGtTpP][iI]?)?[bB]?")


def _size(value: Any, role: Role, loc: PathKey) -> str:
    text = str(value).strip()
    if not _SIZE.fullmatch(text) or isinstance(value, bool):
        raise InputError(f"{format_loc(loc)}: expected a size like 512m or 2g, got {show_value(value)}",
                         file=role.where(loc))
    return text


def _limits(out: dict[str, Any], cpus: Any, memory: Any, ctx: dict[str, Any], role: Role,
            node_cpus: float | None) -> None:
    limits: dict[str, Any] = {}
    if cpus is not None:
        rendered = render_value(cpus, ctx, role.where, ("limits", "cpus"))
        try:
            value = float(rendered) if not isinstance(rendered, bool) else -1.0
        except (TypeError, ValueError):
            value = -1.0
        if not 0 < value <= 100_000:
            raise InputError(f"limits.cpus: expected a number of CPUs like 2 or 0.5, got {show_value(rendered)}",
                             file=role.where(("limits", "cpus")))
        if node_cpus is not None:  # docker refuses a limit above the machine's cores
            value = min(value, node_cpus)
        limits["cpus"] = f"{value:g}"
    if memory is not None:
        limits["memory"] = _size(render_value(memory, ctx, role.where, ("limits", "memory")), role,
                                 ("limits", "memory"))
    if limits:
        out["deploy"] = {"resources": {"limits": limits}}


def _same_node(project: Project, service: str, node: str) -> bool:
    _, svc = project.playbook.service(service)
    return svc.host == node


# ---------------------------------------------------------------- the fleet's services


def build_services(project: Project) -> list[Service]:
    with run_budget():  # every value of every service shares one budget (render/sandbox.py)
        services = [build_service(project, phase, svc) for phase, svc in project.playbook.all_services()]
    check_port_owners(project, services)
    return services


def check_port_owners(project: Project, services: list[Service]) -> None:
    """One publication per host port and protocol on a node (docker would refuse the second,
    be it another service's or the same service's), and none on the node's own SSH port."""
    owners: dict[tuple[str, int, str], Service] = {}
    for svc in services:
        ssh_port = project.inventory.node(svc.node).ssh.port
        for port in svc.ports:
            key = (svc.node, port.port, port.protocol)
            other = owners.get(key)
            if port.port == ssh_port and port.protocol == "tcp":
                _port_refused(project, svc, f"publishes port {port.port}/tcp on {svc.node}, the port its sshd "
                                            "listens on (nodes.<node>.ssh.port): swarm would lose the node")
            if other is not None:
                whom = "itself already" if other.name == svc.name else f"{other.name} already"
                _port_refused(project, svc, f"publishes port {port.port}/{port.protocol} on {svc.node}, which "
                                            f"{whom} publishes")
            owners[key] = svc


def _port_refused(project: Project, svc: Service, problem: str) -> None:
    loc = project.playbook.loc_of(svc.name)
    raise InputError(f"{format_loc(loc)}: {svc.name} {problem}: give it another port (vars.port or "
                     f"nodes.{svc.node}.services.{svc.name}.port)", file=project.playbook.where((*loc, "name")))
