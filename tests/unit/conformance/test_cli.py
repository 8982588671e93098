"""`swarm verify` on the command line: options, bad input exits 2 before any node is contacted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli.main import main

REPO = Path(__file__).resolve().parents[3]


def test_verify_is_a_swarm_command_with_its_options() -> None:
    result = CliRunner().invoke(main, ["verify", "--help"])
    assert result.exit_code == 0
    for option in ("--limit", "--phase", "--junit", "-n", "--inventory"):
        assert option in result.output


def test_bad_limit_exits_2(project_copy: Path) -> None:
    result = CliRunner().invoke(main, ["--project", str(project_copy), "verify", "--limit", "x; rm -rf /"])
    assert result.exit_code == 2
    assert "no node or group named 'x; rm -rf /'" in result.output
    assert "Traceback" not in result.output


def test_runs_as_python_dash_m(project_copy: Path) -> None:
    """`python -m orchestrator.cli.main verify` must import without a circular import."""
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--project", str(project_copy),
                           "verify", "--phase", "42"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "no phase 42" in done.stderr
