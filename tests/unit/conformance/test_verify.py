"""`swarm verify`'s pytest command line and its input checks (no node is contacted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.conformance import verify
from orchestrator.errors import InputError

REPO = Path(__file__).resolve().parents[3]


def test_args_load_the_plugin_in_isolation(tmp_path: Path) -> None:
    args = verify.pytest_args(REPO, Path("inv.yml"), None, "starlord", 3, Path("out.xml"), 3, tmp_path)
    assert args[:4] == ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path)]
    assert ["-p", verify.PLUGIN] == args[args.index(verify.PLUGIN) - 1: args.index(verify.PLUGIN) + 1]
    assert args[args.index("--pyargs") + 1] == "orchestrator.conformance"
    assert args[args.index("--swarm-inventory") + 1] == str(Path("inv.yml").resolve())
    assert args[args.index("--swarm-limit") + 1] == "starlord"
    assert args[args.index("--swarm-phase") + 1] == "3"
    assert f"--junitxml={Path('out.xml').resolve()}" in args
    assert args[args.index("-n") + 1] == "3" and args[args.index("--dist") + 1] == "loadgroup"
    assert "--swarm-playbook" not in args


def test_no_xdist_for_one_worker(tmp_path: Path) -> None:
    assert "-n" not in verify.pytest_args(None, None, None, None, None, None, 1, tmp_path)


def test_bad_input_before_any_node(project_copy: Path) -> None:
    with pytest.raises(InputError, match="nosuch"):
        verify.run_verify(project_copy, None, None, "nosuch", None, None, 0)
    with pytest.raises(InputError, match="no phase 9"):
        verify.run_verify(project_copy, None, None, None, 9, None, 0)
    with pytest.raises(InputError, match="workers"):
        verify.check_input(project_copy, None, None, None, None, -1)


def test_junit_names_lose_the_xdist_group(tmp_path: Path) -> None:
    path = tmp_path / "v.xml"
    path.write_text('<testsuites><testsuite><testcase classname="test_node" name="test_a[starlord]@starlord"/>'
                    '<testcase classname="test_node" name="test_b[oracle:redis]"/></testsuite></testsuites>')
    verify.plain_junit_names(path)
    text = path.read_text()
    assert 'name="test_a[starlord]"' in text and 'name="test_b[oracle:redis]"' in text


POISON = "raise SystemExit('loaded from the directory swarm verify was started in')\n"


def poisoned_directory(root: Path) -> Path:
    """A directory whose own pytest setup breaks any pytest run that reads it: a conftest that
    exits, a `tests/` package whose conftest cannot import, an ini and pyproject with an
    option pytest does not know."""
    (root / "tests").mkdir(parents=True)
    (root / "conftest.py").write_text(POISON)
    (root / "tests" / "__init__.py").write_text("")
    (root / "tests" / "conftest.py").write_text("from tests.nowhere import fixture  # noqa\n")
    (root / "pytest.ini").write_text("[pytest]\naddopts = --no-such-option-from-the-cwd\n")
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = '--no-such-option-either'\n")
    return root


def test_the_run_ignores_the_directory_and_environment_it_starts_in(tmp_path: Path) -> None:
    """From a directory with its own conftest, tests/ package and ini (this repository's root is
    one), and with the operator's PYTEST_ADDOPTS set, the conformance checks still collect."""
    cwd = poisoned_directory(tmp_path / "operator")
    work = tmp_path / "work"
    work.mkdir()
    script = ("import sys; from pathlib import Path; from orchestrator.conformance import verify\n"
              f"args = verify.pytest_args(Path({str(REPO)!r}), None, None, 'oracle', None, None, 0, "
              f"Path({str(work)!r})) + ['--collect-only']\n"
              f"sys.exit(verify.run_pytest(args, Path({str(work)!r})))\n")
    env = {**os.environ, "PYTEST_ADDOPTS": "--no-such-option-from-the-environment",
           "PYTEST_PLUGINS": "no_such_plugin_module"}
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "test_current_release[oracle]" in done.stdout
    assert "loaded from the directory" not in done.stdout + done.stderr
