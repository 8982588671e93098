"""The package's shape: no import cycles among its modules or its folders — imports inside
functions counted — no feature package reaching into another, function-level imports only
where they are honest, and each command importing only what it needs (`swarm --help` loads
no engine, no SSH, no validation models; a no-op deploy no HTTP client or template engine)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "orchestrator"
# feature packages: each stands on the engine and the layers below, never on another
FEATURES = {"orchestrator.preflight", "orchestrator.backup", "orchestrator.conformance", "orchestrator.models"}
# the layers below the engine: none of them imports the engine, a feature package or the CLI
BELOW = {"orchestrator.config", "orchestrator.render", "orchestrator.commands", "orchestrator.facts",
         "orchestrator.transport", "orchestrator.clients"}
ABOVE = {"orchestrator.engine", "orchestrator.cli", *FEATURES}
# a measured cost, said beside a function-level import: "12 ms", "0.2 s", "80-100 ms"
FIGURE = re.compile(r"\d+(\.\d+)?(-\d+(\.\d+)?)?\s*(ms|s)\b")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "standins" in path.parts:  # run inside lab images as plain scripts
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> Iterator[tuple[ast.stmt, list[str], bool]]:
    """Every import statement of a module — (node, targets, at module level) — except those
    under `if TYPE_CHECKING:` (types only, never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for n in ast.walk(block)}
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            yield node, [a.name for a in node.names], id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node, [node.module] + [f"{node.module}.{a.name}" for a in node.names], id(node) in top


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_graph() -> dict[str, set[str]]:
    """module -> the orchestrator modules it imports, at load time or inside a function."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for _, targets, _ in imports(path):
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def folder(module: str) -> str:
    return ".".join(module.split(".")[:2])


def folder_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for source, targets in module_graph().items():
        graph.setdefault(folder(source), set()).update(folder(t) for t in targets if folder(t) != folder(source))
    for targets in list(graph.values()):
        for t in targets:
            graph.setdefault(t, set())
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
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


def test_no_import_cycles_among_modules_counting_imports_inside_functions() -> None:
    graph = module_graph()
    assert len(graph) > 50
    assert cycles(graph) == []


def test_no_import_cycles_among_folders() -> None:
    graph = folder_graph()
    assert {"orchestrator.engine", "orchestrator.cli", "orchestrator.preflight"} <= set(graph)
    assert cycles(graph) == []


def test_the_layers_import_downwards_only() -> None:
    """A feature package never reaches into another; the layers below the engine never reach
    up into it, a feature package or the CLI; only the CLI imports the CLI."""
    wrong = []
    for source, targets in folder_graph().items():
        for target in targets:
            if source in FEATURES and target in FEATURES:
                wrong.append(f"{source} -> {target} (feature into feature)")
            if source in BELOW and target in ABOVE:
                wrong.append(f"{source} -> {target} (below the engine, reaching up)")
            if target == "orchestrator.cli" and source != "orchestrator.cli":
                wrong.append(f"{source} -> {target} (only the CLI imports the CLI)")
    assert wrong == []


def test_imports_inside_functions_are_the_cli_boundary_or_a_measured_cost() -> None:
    """Outside cli/ (where a command's module loads on first use), an import inside a function
    says the start-up cost it saves, with the figure, on its line or just above it."""
    unexplained = []
    for name, path in modules().items():
        if name.startswith("orchestrator.cli"):
            continue
        lines = path.read_text().splitlines()
        for node, targets, at_top in imports(path):
            near = lines[max(0, node.lineno - 4):node.lineno]
            if not at_top and not any(FIGURE.search(line.partition("#")[2]) for line in near):
                unexplained.append(f"{path.relative_to(REPO)}:{node.lineno} imports {targets[0]}")
    assert unexplained == []


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


def test_a_no_op_deploy_loads_no_validation_templates_or_http_clients() -> None:
    """What `swarm deploy` imports before the plan record's first question (cli, engine/deploy,
    the record, engine/first, the session, SSH): no pydantic, jinja2, hvac, py-consul, requests,
    httpx or rich, and not the runbook — that is what keeps a no-op near a bare SSH script.
    yaml is there (the record's addresses are checked against the inventory's); http.client
    loads later, in the Vault reader's thread."""
    code = ("import orchestrator.cli.main, orchestrator.cli.deploy, orchestrator.engine.deploy, "
            "orchestrator.engine.context, orchestrator.events, orchestrator.engine.signals, orchestrator.engine.first")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    heavy = {m for m in loaded if m.split(".")[0] in {"pydantic", "jinja2", "hvac", "consul", "requests", "httpx",
                                                      "rich"} or m == "http.client"}
    assert heavy == set(), sorted(heavy)
    assert "asyncssh" in loaded and "orchestrator.engine.record" in loaded
    assert not {m for m in loaded if m.startswith(("orchestrator.engine.runbook", "orchestrator.config",
                                                   "orchestrator.render", "orchestrator.preflight"))}


def test_a_deploy_loads_its_record_and_dials_before_the_ssh_library() -> None:
    """Everything a deploy needs to load its plan record and dial its optional nodes
    (engine/deploy, the record, transport/dial) comes without asyncssh: the optional nodes'
    connect windows run while it loads, not after (engine/deploy.py)."""
    code = "import orchestrator.cli.main, orchestrator.cli.deploy, orchestrator.engine.deploy"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert {"orchestrator.engine.record", "orchestrator.transport.dial"} <= loaded
    assert not {m for m in loaded if m.split(".")[0] == "asyncssh" or m == "orchestrator.engine.session"}


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


def test_no_class_in_the_engine_is_over_250_lines() -> None:
    """The engine's classes stay runbooks over collaborators (the session, the runner, the gate),
    not god objects."""
    big = []
    for path in (PACKAGE / "engine").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and (node.end_lineno or 0) - node.lineno + 1 > 250:
                big.append(f"{path.name}: {node.name} ({(node.end_lineno or 0) - node.lineno + 1} lines)")
    assert big == []
