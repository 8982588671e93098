"""The package's shape: no import cycles among its modules, and each command imports only what
it needs (`swarm --help` loads no engine, no SSH, no validation models)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "orchestrator"


def module_graph() -> dict[str, set[str]]:
    """module -> the orchestrator modules it imports at load time (not inside functions,
    not under `if TYPE_CHECKING`)."""
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        if "standins" in path.parts:  # run inside lab images as plain scripts
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_among_orchestrator_modules() -> None:
    graph = module_graph()
    assert len(graph) > 50
    assert cycles(graph) == []


def imported_by(*argv: str) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator.cli", *argv],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_help_and_version_load_no_engine() -> None:
    for argv in (("--help",), ("--version",), ("deploy", "--help")):
        loaded = imported_by(*argv)
        heavy = {m for m in loaded if m.split(".")[0] in {"asyncssh", "pydantic", "jinja2", "httpx", "hvac",
                                                          "consul", "requests", "rich", "docker"}}
        assert heavy == set(), f"swarm {' '.join(argv)} imports {sorted(heavy)}"
        assert not {m for m in loaded if m.startswith(("orchestrator.engine", "orchestrator.lab.api"))}


def test_the_no_op_fast_path_loads_no_validation_templates_or_http_clients() -> None:
    """What a repeat no-op deploy imports (cli, fast path, SSH): no pydantic, jinja2, yaml,
    hvac, py-consul, requests or httpx — that is what keeps it near a bare SSH script."""
    code = ("import orchestrator.cli.main, orchestrator.cli.deploy, orchestrator.engine.fastpath, "
            "orchestrator.engine.context, orchestrator.events, orchestrator.engine.signals")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    heavy = {m for m in loaded if m.split(".")[0] in {"pydantic", "jinja2", "yaml", "hvac", "consul",
                                                      "requests", "httpx", "rich"}}
    assert heavy == set(), sorted(heavy)
    assert "asyncssh" in loaded


def test_a_command_loads_only_its_own_module() -> None:
    """Sub-commands are imported on use: `swarm deploy` loads neither the lab, nor preflight
    scheduling, nor the conformance checks, nor the backup commands."""
    loaded = imported_by("deploy", "--help")
    assert "orchestrator.cli.deploy" in loaded
    others = {m for m in loaded if m.startswith(("orchestrator.lab", "orchestrator.preflight",
                                                 "orchestrator.conformance", "orchestrator.cli.backup",
                                                 "orchestrator.cli.init", "orchestrator.cli.secrets"))}
    assert others == set(), sorted(others)
    listed = imported_by("--help")
    assert not {m for m in listed if m.startswith("orchestrator.") and m not in
                {"orchestrator.cli", "orchestrator.cli.main", "orchestrator.cli.common", "orchestrator.paths"}}


def test_the_command_list_says_what_each_command_says_of_itself() -> None:
    """`swarm --help` lists the commands from summaries kept beside their module names; each
    is the first paragraph of that command's own help, so the listing never drifts."""
    import inspect

    from orchestrator.cli.main import LAZY

    for name, (module, summary) in LAZY.items():
        command = getattr(__import__(module, fromlist=[name]), name)
        assert command.name == name
        first = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
        assert summary == first, f"{name}: LAZY says {summary!r}, the command says {first!r}"
