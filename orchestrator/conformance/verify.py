"""`swarm verify`: run the conformance suite (orchestrator.conformance) with pytest.

`run_verify` checks its input first (project, --limit, --phase: bad input is an
`InputError`, exit 2), then runs pytest in this process on the conformance package with
the plugin loaded, `--junitxml` when asked and `-n WORKERS --dist loadgroup` (one xdist
group per node). It prints the plugin's per-node summary and returns 0 when every check
passed, 1 when any failed.

The run is the same from any directory: pytest is the engine here, not the operator's test
runner, so nothing of the directory swarm is started in, nor the operator's pytest settings,
reaches it — an empty ini and rootdir of its own (no pytest.ini, tox.ini, setup.cfg or
pyproject.toml of the cwd), `--noconftest` (pytest otherwise loads the cwd's conftest.py and
`test*/conftest.py` when its arguments are package names, which broke verify in any directory
holding a `tests/` package, this repository's root first), and none of `PYTEST_ADDOPTS`,
`PYTEST_PLUGINS`, `PYTEST_DISABLE_PLUGIN_AUTOLOAD` (testinfra and xdist are entry-point plugins).
The checks' fixtures live in the plugin for that reason.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pytest

from orchestrator.config.project import load_project
from orchestrator.conformance.plugin import make_scope, summary_lines
from orchestrator.errors import InputError
from orchestrator.transport.ssh import check_local_files, target_for

PACKAGE = "orchestrator.conformance"
PLUGIN = "orchestrator.conformance.plugin"
_USAGE_ERROR, _NO_TESTS = 4, 5
# The operator's own pytest settings, read from the environment by every pytest run.
OPERATOR_PYTEST_ENV = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")


def pytest_args(project_root: Path | None, inventory: Path | None, playbook: Path | None,
                limit: str | None, phase: str | None, junit: Path | None, workers: int,
                workdir: Path, verbose: int = 0) -> list[str]:
    """The pytest command line of one verify run (pure: unit-tested)."""
    ini = workdir / "pytest.ini"
    args = ["-c", str(ini), "--rootdir", str(workdir), "--noconftest", "-p", "no:cacheprovider",
            "-p", "no:benchmark", "-p", PLUGIN,
            "--pyargs", PACKAGE, "--swarm-results", str(workdir / "results.json"),
            "-v" if verbose else "-q", "--tb=short" if verbose else "--tb=no", "-rN",
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    for flag, value in (("--swarm-project", project_root), ("--swarm-inventory", inventory),
                        ("--swarm-playbook", playbook), ("--swarm-limit", limit)):
        if value is not None:
            args += [flag, str(Path(value).resolve()) if isinstance(value, Path) else value]
    if phase is not None:
        args += ["--swarm-phase", str(phase)]
    if junit is not None:
        args += [f"--junitxml={Path(junit).resolve()}", "-o", "junit_family=xunit2",
                 "-o", "junit_suite_name=swarm-verify"]
    if workers > 1:
        args += ["-n", str(workers), "--dist", "loadgroup"]
    return args


def check_input(project_root: Path | None, inventory: Path | None, playbook: Path | None,
                limit: str | None, phase: str | None, workers: int) -> None:
    """Fail with InputError (exit 2) before any node is contacted: bad input, or an SSH key or
    known_hosts file that is missing or unreadable (once, not once per check)."""
    if workers < 0:
        raise InputError(f"-n: workers must be 0 or more, got {workers}")
    project = load_project(project_root, inventory, playbook)
    scope = make_scope(project, limit, phase)
    if not scope.nodes:
        raise InputError(f"nothing to verify: --limit {limit!r} and --phase {phase} select no node")
    check_local_files([target_for(project.inventory, n) for n in scope.nodes], str(project.inventory.path))


def run_verify(project_root: Path | None, inventory: Path | None, playbook: Path | None,
               limit: str | None, phase: str | None, junit: Path | None, workers: int,
               verbose: int = 0) -> int:
    """Run the conformance checks; 0 when the fleet conforms, 1 when any check failed."""
    check_input(project_root, inventory, playbook, limit, phase, workers)
    with tempfile.TemporaryDirectory(prefix="swarm-verify-") as tmp:
        workdir = Path(tmp)
        code = run_pytest(pytest_args(project_root, inventory, playbook, limit, phase, junit,
                                      workers, workdir, verbose), workdir)
        nodes = _read_results(workdir / "results.json")
    if junit is not None and workers > 1:
        plain_junit_names(Path(junit))
    if code == _USAGE_ERROR:
        raise InputError("pytest refused the verify run (see above)")
    click.echo("")
    for line in summary_lines(nodes):
        click.echo(line)
    if code == _NO_TESTS or not nodes:
        raise InputError("nothing to verify: no check was collected")
    failed = sum(int(str(n.get("failed", 0))) for n in nodes.values())
    return 0 if code == 0 and not failed else 1


def run_pytest(args: list[str], workdir: Path) -> int:
    """pytest.main on `args` with verify's empty ini in `workdir`, without the operator's
    pytest environment (restored afterwards); pytest's exit code."""
    (workdir / "pytest.ini").write_text("[pytest]\n")
    with _without_env(OPERATOR_PYTEST_ENV):
        return int(pytest.main(args))


@contextmanager
def _without_env(names: tuple[str, ...]) -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def plain_junit_names(path: Path) -> None:
    """Drop xdist's `@<node>` group suffix from test case names (the id names the node already)."""
    import xml.etree.ElementTree as ET  # 2 ms, with plain_id's plugin (pytest, testinfra: ~100 ms) below

    from orchestrator.conformance.plugin import (
        plain_id,  # loaded into this process only for --junit: 100 ms
    )

    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return
    for case in tree.getroot().iter("testcase"):
        case.set("name", plain_id(case.get("name", "")))
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _read_results(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    nodes = data.get("nodes") if isinstance(data, dict) else None
    return nodes if isinstance(nodes, dict) else {}
