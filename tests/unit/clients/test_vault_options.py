"""`swarm vault init` checks its options before it connects (the inventory's Vault is unreachable here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("args", "expected"), [
    (["--shares", "0"], "--shares: Vault splits its key into 1 to 255 shares, got 0"),
    (["--shares", "256"], "got 256"),
    (["--shares", "3", "--threshold", "5"], "--threshold: between 1 and --shares (3)"),
    (["--shares", "3", "--threshold", "0"], "--threshold"),
    (["--shares", "3", "--threshold", "1"], "any one key unseals Vault"),
])
def test_bad_init_options_exit_2_before_connecting(tmp_path: Path, args: list[str], expected: str) -> None:
    key_file = tmp_path / "keys.json"
    result = CliRunner().invoke(main, ["--project", str(REPO), "vault", "init", "--key-file", str(key_file), *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "unreachable" not in result.output and not key_file.exists()


def test_key_file_that_is_a_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--project", str(REPO), "vault", "init", "--key-file", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output
