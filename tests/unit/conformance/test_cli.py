"""`swarm verify` on the command line: options, bad input exits 2 before any node is contacted."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
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


def _without_known_hosts(root: Path, edit_yaml: Callable[..., None]) -> Path:
    """The project's SSH key exists, its known_hosts file does not; every node on the loopback
    at a closed port, so nothing leaves this machine whatever the command does."""
    key, missing = root / "id_test", root / "no-such-dir" / "known_hosts"
    key.write_text("not read: the known_hosts check comes first\n")

    def edit(inv: dict) -> None:
        inv["ssh"].update(key=str(key), known_hosts=str(missing), port=1)
        for i, node in enumerate(inv["nodes"].values(), start=2):
            node["address"] = f"127.0.0.{i}"
    edit_yaml(root / "inventory/swarm.yml", edit)
    return missing


@pytest.mark.parametrize("command", [["verify"], ["status"]])
def test_a_missing_known_hosts_file_is_one_error_saying_what_to_do(
        project_copy: Path, edit_yaml: Callable[..., None], command: list[str]) -> None:
    missing = _without_known_hosts(project_copy, edit_yaml)
    result = CliRunner().invoke(main, ["--project", str(project_copy), *command])
    assert result.exit_code == 2, result.output
    assert result.output.count(f"known_hosts file {missing} does not exist") == 1, result.output
    assert "swarm trust oracle starlord thanos" in result.output and "swarm init --probe" in result.output
    assert "ssh.known_hosts" in result.output
    assert "Traceback" not in result.output and "FileNotFoundError" not in result.output


def test_an_unreadable_known_hosts_file_is_one_error(project_copy: Path, edit_yaml: Callable[..., None]) -> None:
    missing = _without_known_hosts(project_copy, edit_yaml)
    missing.parent.mkdir()
    missing.write_bytes(b"\xff\xfe not text\n")
    result = CliRunner().invoke(main, ["--project", str(project_copy), "verify"])
    assert result.exit_code == 2, result.output
    assert f"known_hosts file {missing} cannot be read" in result.output
    missing.unlink()
    missing.mkdir()
    result = CliRunner().invoke(main, ["--project", str(project_copy), "verify"])
    assert result.exit_code == 2 and f"known_hosts file {missing} is not a file" in result.output
