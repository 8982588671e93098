"""The swarm command as a user runs it: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli.main import main

REPO = Path(__file__).resolve().parents[3]


def swarm(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's code, whatever the cwd
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env)


def test_render_check_passes_on_the_repo() -> None:
    result = swarm("render", "--check")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_render_check_fails_when_a_role_changes(project_copy: Path) -> None:
    assert swarm("render", cwd=project_copy).returncode == 0
    assert swarm("render", "--check", cwd=project_copy).returncode == 0
    role = project_copy / "roles/grafana/role.yml"
    role.write_text(role.read_text().replace("memory: 1g", "memory: 2g"))
    result = swarm("render", "--check", cwd=project_copy)
    assert result.returncode == 1
    assert "stale:" in result.stderr and "oracle/compose.yml" in result.stderr


def test_render_writes_node_projects(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--project", str(REPO), "render", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "starlord/compose.yml").is_file()
    assert (tmp_path / "oracle/config/haproxy/haproxy.cfg").is_file()


def test_plan_json_lists_gpu_budget() -> None:
    result = swarm("plan", "--output", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["feasible"] is True
    gpu = data["nodes"]["starlord"]["gpus"][0]
    assert {i["service"] for i in gpu["instances"]} == {"vllm-primary", "vllm-secondary"}


def test_plan_phase_filters_services() -> None:
    result = swarm("plan", "--phase", "4")
    assert result.returncode == 0
    assert "vllm-backup" in result.stdout and "vllm-primary" not in result.stdout


def test_plan_takes_the_same_phase_selector_as_deploy() -> None:
    """`--phase 3-4` and `--phase 3,4` select the same services in plan as in deploy."""
    for selector in ("3-4", "3,4"):
        result = swarm("plan", "--phase", selector)
        assert result.returncode == 0, result.stderr
        assert "vllm-backup" in result.stdout and "vllm-primary" in result.stdout, selector
        assert "postgres" not in result.stdout, selector
    refused = swarm("plan", "--phase", "3-")
    assert refused.returncode == 2 and "expected a phase number" in refused.stderr


def test_unknown_phase_is_exit_2() -> None:
    result = swarm("plan", "--phase", "42")
    assert result.returncode == 2
    assert result.stderr.startswith("error: no phase 42") and "Traceback" not in result.stderr


def test_missing_inventory_is_exit_2() -> None:
    result = swarm("-i", "nope.yml", "plan")
    assert result.returncode == 2
    assert "nope.yml: inventory not found" in result.stderr


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path) -> None:
    """`swarm plan | head -1`: swarm's stdout pipe closes early; no "internal error", exit 0."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan"], cwd=REPO, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr


def test_a_phase_selector_is_a_number_a_range_or_a_list_nothing_else() -> None:
    """`--phase ''` or `--phase all` once meant every phase: for `rollback` that rolled the whole
    fleet back. Now both are bad input, refused before anything loads or connects."""
    runner = CliRunner()
    for command in ("deploy", "rollback", "releases", "preflight", "backup", "verify"):
        for selector in ("", "all", "2-", "3-1", "2,,4", "x"):
            result = runner.invoke(main, ["--project", str(REPO), command, "--phase", selector])
            assert result.exit_code == 2, (command, selector, result.output)
            assert "--phase" in result.output and "Traceback" not in result.output


def test_a_rollback_is_exactly_one_phase() -> None:
    runner = CliRunner()
    for selector in ("2-4", "2,4", "3-3,4"):
        result = runner.invoke(main, ["--project", str(REPO), "rollback", "--phase", selector])
        assert result.exit_code == 2 and "a rollback is per phase" in result.output, result.output
    missing = runner.invoke(main, ["--project", str(REPO), "rollback"])
    assert missing.exit_code == 2 and "--phase N" in missing.output
    validation = runner.invoke(main, ["--project", str(REPO), "rollback", "--phase", "0"])
    assert validation.exit_code == 2 and "validation" in validation.output, validation.output
