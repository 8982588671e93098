"""The pytest plugin behind `swarm verify`: options, the fleet context, test generation, summary.

Load it with `-p orchestrator.conformance.plugin`. It adds `--swarm-*` options, builds a
`Conformance` context once per session (project, render, one testinfra host per node,
facts cached per node), parametrizes the tests over the nodes and services in scope (ids
`node` or `node:service`, one xdist group per node so `--dist loadgroup` keeps a node's
checks on one worker and one connection), tags every test with its node (a JUnit
property) and prints a per-node summary. `--swarm-results FILE` writes that summary as
JSON for `swarm verify`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra.host

from orchestrator.config.inventory import Node
from orchestrator.config.project import Project, load_project
from orchestrator.conformance import hosts
from orchestrator.conformance.facts import NodeFacts, facts_script, parse_facts
from orchestrator.errors import SwarmError
from orchestrator.render.fleet import FleetRender, render_fleet
from orchestrator.render.services import Service
from orchestrator.secrets import Secret

CONTEXT_KEY = pytest.StashKey["Conformance"]()
FACTS_TIMEOUT_S = 120


# ---------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("swarm", "swarm conformance (swarm verify)")
    group.addoption("--swarm-project", type=Path, help="project root (default: found from the cwd)")
    group.addoption("--swarm-inventory", type=Path, help="inventory file (default inventory/swarm.yml)")
    group.addoption("--swarm-playbook", type=Path, help="playbook file (default playbooks/ai-swarm.yml)")
    group.addoption("--swarm-limit", help="only these nodes or groups (comma separated)")
    group.addoption("--swarm-phase", help="only the services of these phases: 3, 2-4, 2,4 (0: every phase)")
    group.addoption("--swarm-preflight", type=Path,
                    help="preflight JSON report whose pinned digests the images must match")
    group.addoption("--swarm-results", type=Path, help="write the per-node summary as JSON here")


# ---------------------------------------------------------------- scope


@dataclass(frozen=True)
class Scope:
    """The nodes and services one verify covers."""

    project: Project
    render: FleetRender
    nodes: tuple[Node, ...]
    services: tuple[Service, ...]

    def services_on(self, node: str) -> list[Service]:
        return [s for s in self.services if s.node == node]

    def playbook_services_on(self, node: str) -> list[Service]:
        """Every service the playbook puts on the node, whatever the phase filter."""
        return list(self.render.nodes[node].services)

    def role_services(self, role: str) -> list[Service]:
        return [s for s in self.render.all_services() if s.role == role]


def make_scope(project: Project, limit: str | None, phase: str | int | None) -> Scope:
    from orchestrator.engine.selection import parse_phases

    ids = parse_phases(None if phase is None else str(phase), project)  # unknown -> InputError
    if ids is not None and all(project.playbook.phase(i).kind == "preflight" for i in ids):
        ids = None  # 0, validation: every phase
    phases = [p for p in project.playbook.phases if ids is None or p.id in ids]
    hosts_in_phases = {h for p in phases for h in p.hosts}
    chosen = project.inventory.select(limit)
    nodes = tuple(n for n in chosen if n.name in hosts_in_phases and (limit or not n.spec.optional))
    wanted = {s.name for p in phases if not (p.spec.optional and not limit) for s in p.services}
    render = render_fleet(project, for_node=True)
    names = {n.name for n in nodes}
    services = tuple(s for s in render.all_services() if s.node in names and s.name in wanted)
    return Scope(project=project, render=render, nodes=nodes, services=services)


# ---------------------------------------------------------------- context


@dataclass
class Conformance:
    """Per session: the scope, one testinfra host per node, cached facts, secrets and pins."""

    scope: Scope
    connection: str = "paramiko"
    ssh_config: Path | None = None
    identity: Path | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    preflight: Path | None = None
    _hosts: dict[str, testinfra.host.Host] = field(default_factory=dict)
    _facts: dict[str, NodeFacts] = field(default_factory=dict)
    _secrets: dict[str, Secret] | None = None
    _consul: dict[str, str] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def project(self) -> Project:
        return self.scope.project

    def node(self, name: str) -> Node:
        return self.project.inventory.node(name)

    def host(self, node: str) -> testinfra.host.Host:
        """The node's testinfra host: built once, its one SSH connection reused by every check."""
        if node not in self._hosts:
            spec = hosts.host_spec(self.project.inventory, self.node(node))
            self._hosts[node] = hosts.make_host(spec, self.connection, self._config_file(),
                                                self.identity, **self.backend_options)
        return self._hosts[node]

    def _config_file(self) -> Path:
        if self.ssh_config is not None:
            return self.ssh_config
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="swarm-verify-")
        path = Path(self._tmp.name) / "ssh_config"
        if not path.exists():
            specs = [hosts.host_spec(self.project.inventory, n) for n in self.scope.nodes]
            path.write_text(hosts.ssh_config_text(specs, Path(self._tmp.name)))
        return path

    def facts(self, node: str, *need: str) -> NodeFacts:
        """Everything the node checks read, in one command, cached for the session.

        `need` names the steps a check relies on; if one failed on the node the check
        fails with that step's error instead of judging empty facts.
        """
        if node not in self._facts:
            self._facts[node] = self._read_facts(self.node(node))
        facts = self._facts[node]
        failed = [f"{step}: {facts.errors[step]}" for step in need if step in facts.errors]
        if failed:
            pytest.fail(f"reading {node} failed: {'; '.join(failed)}", pytrace=False)
        return facts

    def _read_facts(self, node: Node) -> NodeFacts:
        store = list(self.scope.render.nodes[node.name].store)
        script = facts_script(node.deploy_root, store, gpu=bool(node.gpus))
        result = self.host(node.name).run(script.shell)
        return parse_facts(node.name, node.deploy_root, script.split(result.stdout, result.stderr),
                           gpu=bool(node.gpus))

    def secrets(self) -> dict[str, Secret]:
        """The secrets the scope's services use, read from Vault once."""
        if self._secrets is None:
            from orchestrator.clients.secrets_source import SecretSource

            source = SecretSource.from_project(self.project)
            names = source.names_for(self.scope.services)
            names |= {ref for s in self.scope.role_services("litellm") for ref in s.secret_env.values()
                      if "{{" not in ref}
            self._secrets = source.read(names) if names else {}
        return self._secrets

    def pins(self) -> dict[str, str]:
        """Image -> `repo@sha256:...` from the preflight report, when there is one."""
        path = self.preflight
        if path is None or not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        pins = data.get("pins") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in pins.items()} if isinstance(pins, dict) else {}

    def consul_statuses(self) -> dict[str, str]:
        if self._consul is None:
            from orchestrator.clients.consul import ConsulClient

            spec = self.project.inventory.spec.consul
            token_path = self.project.inventory.resolve_path(spec.token_file)
            token = token_path.read_text().strip() if token_path and token_path.is_file() else None
            client = ConsulClient(spec.addr, token)
            self._consul = {h.service_id: h.status for h in client.services_with_health()}
        return self._consul

    def close(self) -> None:
        for host in self._hosts.values():
            client = host.backend.__dict__.get("client")
            if client is not None:
                client.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def default_preflight() -> Path:
    from orchestrator.paths import local_state_dir

    return local_state_dir() / "preflight.json"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): keep a node's checks on one xdist worker")
    config.pluginmanager.register(Summary(config.getoption("--swarm-results")), "swarm-summary")


def build_context(config: pytest.Config) -> Conformance:
    try:
        project = load_project(config.getoption("--swarm-project"), config.getoption("--swarm-inventory"),
                               config.getoption("--swarm-playbook"))
        scope = make_scope(project, config.getoption("--swarm-limit"), config.getoption("--swarm-phase"))
    except SwarmError as exc:
        raise pytest.UsageError(f"swarm: {exc}") from None
    extra: dict[str, Any] = {}
    if config.getoption("sudo", default=False):
        extra["sudo"] = True
        extra["sudo_user"] = config.getoption("sudo_user", default=None)
    ssh_config = config.getoption("ssh_config", default=None)
    identity = config.getoption("ssh_identity_file", default=None)
    return Conformance(scope=scope, connection=config.getoption("connection", default=None) or "paramiko",
                       ssh_config=Path(ssh_config) if ssh_config else None,
                       identity=Path(identity) if identity else None, backend_options=extra,
                       preflight=config.getoption("--swarm-preflight") or default_preflight())


def context(config: pytest.Config) -> Conformance:
    if CONTEXT_KEY not in config.stash:
        config.stash[CONTEXT_KEY] = build_context(config)
    return config.stash[CONTEXT_KEY]


def pytest_unconfigure(config: pytest.Config) -> None:
    if CONTEXT_KEY in config.stash:
        config.stash[CONTEXT_KEY].close()


@pytest.fixture(scope="session")
def swarm(request: pytest.FixtureRequest) -> Conformance:
    """The fleet context: scope, one testinfra host per node, facts cached per node (here, not
    in a conftest: `swarm verify` runs with --noconftest, see verify.py)."""
    return context(request.config)


# ---------------------------------------------------------------- parametrization

Picker = Callable[[Scope], list[Any]]

PARAMETERS: dict[str, Picker] = {
    "node": lambda s: list(s.nodes),
    "gpu_node": lambda s: [n for n in s.nodes if n.gpus],
    "service": lambda s: list(s.services),
    "checked_service": lambda s: [v for v in s.services if v.has_healthcheck],
    "secret_service": lambda s: [v for v in s.services if v.secret_env],
    "gpu_service": lambda s: [v for v in s.services if v.gpu],
    "protected_service": lambda s: [v for v in s.services if v.protected],
    "consul_service": lambda s: [v for v in s.services if v.consul is not None],
    "haproxy_service": lambda s: [v for v in s.services if v.role == "haproxy"],
    "litellm_service": lambda s: [v for v in s.services if v.role == "litellm"],
}


def node_of(value: Any) -> str:
    return value.name if isinstance(value, Node) else str(value.node)


def param_id(value: Any) -> str:
    return value.name if isinstance(value, Node) else f"{value.node}:{value.name}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for argname, pick in PARAMETERS.items():
        if argname in metafunc.fixturenames:
            values = pick(context(metafunc.config).scope)
            params = [pytest.param(v, id=param_id(v), marks=pytest.mark.xdist_group(node_of(v)))
                      for v in values]
            metafunc.parametrize(argname, params)
            return


def item_node(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for value in callspec.params.values():
        if isinstance(value, Node | Service):
            return node_of(value)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tag each check with its node; drop checks with nothing in scope (no skipped noise in JUnit)."""
    kept, dropped = [], []
    for item in items:
        node = item_node(item)
        if node is not None:
            item.user_properties.append(("node", node))
            kept.append(item)
        elif _is_conformance(item):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _is_conformance(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    return getattr(module, "__name__", "").startswith("orchestrator.conformance.")


# ---------------------------------------------------------------- summary


def first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(crash.message) if crash is not None else str(report.longrepr)
    text = text.removeprefix("AssertionError: ").removeprefix("Failed: ")
    return text.split("\nassert ")[0].strip().replace("\n", " ")[:500]


class Summary:
    """Passed / failed checks per node, from the reports (also those xdist workers send)."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.results: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node = dict(report.user_properties).get("node", "fleet")
        entry = self.results.setdefault(report.nodeid, {"node": node, "outcome": "passed", "message": ""})
        if report.failed and entry["outcome"] != "failed":
            entry.update(outcome="failed", message=first_line(report))
        elif report.skipped and entry["outcome"] == "passed":
            entry.update(outcome="skipped", message=first_line(report))

    def per_node(self) -> dict[str, dict[str, Any]]:
        return summarize(self.results)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results or self.out is not None:  # with --swarm-results, the caller prints it
            return
        terminalreporter.section("swarm verify: per node")
        for line in summary_lines(self.per_node()):
            terminalreporter.line(line)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.out is None or hasattr(session.config, "workerinput"):
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps({"nodes": self.per_node(), "tests": self.results}, indent=2))


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    nodes: dict[str, dict[str, Any]] = {}
    for nodeid, entry in sorted(results.items()):
        node = nodes.setdefault(entry["node"], {"passed": 0, "failed": 0, "skipped": 0, "failures": []})
        node[entry["outcome"]] += 1
        if entry["outcome"] == "failed":
            node["failures"].append(f"{plain_id(nodeid.rpartition('::')[2])}: {entry['message']}")
    return nodes


def plain_id(test_id: str) -> str:
    """`test_x[node]@node` -> `test_x[node]`: xdist's loadgroup appends the group to ids."""
    return test_id.rpartition("@")[0] if "@" in test_id.rpartition("]")[2] else test_id


def summary_lines(nodes: dict[str, dict[str, Any]]) -> Iterable[str]:
    for name, counts in sorted(nodes.items()):
        state = "conforms" if not counts["failed"] else "DRIFT"
        skipped = f", {counts['skipped']} skipped" if counts["skipped"] else ""
        yield f"{name}: {state} — {counts['passed']} passed, {counts['failed']} failed{skipped}"
        for failure in counts["failures"]:
            yield f"  FAILED {failure}"
