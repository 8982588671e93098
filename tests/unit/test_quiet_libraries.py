"""No library warning reaches the operator: swarm's modules, and the CLI's commands that need no
node, run under `python -W error` (every warning an error, so an unfiltered one is a traceback
and a non-zero exit). A library that starts warning after an upgrade fails here: filter it where
it arises (orchestrator/__init__.py says how) or pin the library. Commands that open SSH are run
the same way on the lab by tests/integration/test_readme_commands.py, which reads their stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

IMPORT_ALL = """
import importlib, pkgutil, sys, orchestrator
names = [m.name for m in pkgutil.walk_packages(orchestrator.__path__, "orchestrator.")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
libraries = {n.split(".")[0] for n in sys.modules} - set(sys.stdlib_module_names)
print(len(names), " ".join(sorted(n for n in libraries if not n.startswith(("_", "orchestrator")))))
"""


def strict(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "error", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_every_module_and_the_libraries_it_imports_load_without_a_warning() -> None:
    done = strict("-c", IMPORT_ALL)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr == ""
    libraries = set(done.stdout.split()[1:])
    assert {"asyncssh", "paramiko", "testinfra", "pytest", "hvac", "consul", "httpx"} <= libraries


@pytest.mark.parametrize("argv", [
    ["--help"], ["verify", "--help"], ["lab", "--help"], ["plan"], ["render", "--check"],
], ids=lambda argv: " ".join(argv))
def test_offline_commands_print_no_warning(argv: list[str]) -> None:
    done = strict("-m", "orchestrator.cli", *argv)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr == ""


def test_init_prints_no_warning(tmp_path: Path) -> None:
    done = strict("-m", "orchestrator.cli", "init", str(tmp_path / "site"), "--node", "box@198.18.7.1",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr == ""
