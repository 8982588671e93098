"""`swarm preflight` and `swarm schedule` as an operator types them: exit codes, formats,
atomic --out, the --every loop stopping on SIGTERM, and units systemd accepts.

The fleet here is a copy of the project whose nodes point at closed loopback ports, so
every node fails its SSH check at once and no lab is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main

REPO = Path(__file__).resolve().parents[3]
RUN_SWARM = "from orchestrator.cli.main import main; main()"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dead_fleet(project_copy: Path, edit_yaml: Callable[..., None], tmp_path: Path) -> Path:
    """The shipped fleet with every node on a closed loopback port (SSH fails at once)."""
    key = tmp_path / "key"
    key.write_text("not a key\n")
    (tmp_path / "known_hosts").write_text("")  # there, holding no key: a missing one is exit 2 up front
    port = closed_port()

    def point_at_loopback(inv: dict) -> None:
        inv["ssh"].update(key=str(key), known_hosts=str(tmp_path / "known_hosts"), connect_timeout=2)
        inv["vault"]["addr"] = f"http://127.0.0.1:{port}"
        inv["registry"] = {"mirror": f"127.0.0.1:{port}", "insecure": True}
        for node in inv["nodes"].values():
            node["address"] = "127.0.0.1"
            node["ssh"] = {"port": port}

    edit_yaml(project_copy / "inventory/swarm.yml", point_at_loopback)
    return project_copy


def invoke(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--project", str(root), *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_unreachable_nodes_fail_with_exit_1_and_name_each_node(dead_fleet: Path) -> None:
    code, out = invoke(dead_fleet, "preflight", "--phase", "3", "--output", "json")
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    ssh = [r for r in report["results"] if r["check"] == "ssh"]
    assert [(r["node"], r["status"]) for r in ssh] == [("starlord", "fail")]
    images = [r for r in report["results"] if r["check"] == "image"]
    assert images and all(r["status"] == "fail" and "unreachable" in r["message"] for r in images)
    secrets = [r for r in report["results"] if r["check"] == "secrets"]
    assert secrets and secrets[0]["status"] == "fail" and secrets[0]["subject"] == "vault"


def test_bad_input_exits_2(dead_fleet: Path) -> None:
    assert invoke(dead_fleet, "preflight", "--phase", "42")[0] == 2
    assert invoke(dead_fleet, "preflight", "--output", "xml")[0] == 2
    assert invoke(dead_fleet, "preflight", "--limit", "nobody")[0] == 2
    assert invoke(dead_fleet, "preflight", "--every", "soon")[0] == 2


@pytest.mark.parametrize("output", ["junit", "prometheus", "text"])
def test_out_is_written_atomically_in_each_format(dead_fleet: Path, tmp_path: Path, output: str) -> None:
    target = tmp_path / f"report.{output}"
    code, _ = invoke(dead_fleet, "preflight", "--phase", "2", "--output", output, "--out", str(target))
    text = target.read_text()
    assert code == 1 and "oracle" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_every_rewrites_out_until_sigterm(dead_fleet: Path, tmp_path: Path) -> None:
    target = tmp_path / "preflight.prom"
    argv = [sys.executable, "-c", RUN_SWARM, "--project", str(dead_fleet), "preflight",
            "--phase", "2", "--output", "prometheus", "--out", str(target), "--every", "1s"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not target.exists() or "swarm_preflight_check" not in target.read_text():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped after" in err
    assert 'swarm_preflight_check{node="oracle",check="ssh",subject="login"} 0' in target.read_text()


def test_schedule_install_writes_units_systemd_accepts_and_remove_deletes_them(
    tmp_path: Path,
) -> None:
    units = tmp_path / "units"
    out = tmp_path / "state" / "preflight.prom"
    code, text = invoke(REPO, "schedule", "install", "--every", "15m", "--out", str(out),
                        "--phase", "3", "--unit-dir", str(units))
    assert code == 0, text
    service = (units / "swarm-preflight.service").read_text()
    timer = (units / "swarm-preflight.timer").read_text()
    assert "preflight --output prometheus --out" in service and "--phase 3" in service
    assert f"WorkingDirectory={REPO}" in service and "OnUnitActiveSec=15min" in timer
    assert out.parent.is_dir() and "systemctl --user enable --now swarm-preflight.timer" in text
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", str(units / "swarm-preflight.timer"),
                                 str(units / "swarm-preflight.service")],
                                capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "err"})
        assert verify.returncode == 0, verify.stderr
    code, text = invoke(REPO, "schedule", "remove", "--unit-dir", str(units))
    assert code == 0 and not list(units.iterdir())
    assert invoke(REPO, "schedule", "install", "--every", "15m", "--on-calendar", "daily",
                  "--unit-dir", str(units))[0] == 2


def test_schedule_install_backup_writes_a_daily_backup_timer_systemd_accepts(tmp_path: Path) -> None:
    units = tmp_path / "units"
    out = tmp_path / "textfile" / "swarm_backup.prom"
    code, text = invoke(REPO, "schedule", "install", "--backup", "--out", str(out), "--limit", "oracle",
                        "--unit-dir", str(units))
    assert code == 0, text
    service = (units / "swarm-backup.service").read_text()
    timer = (units / "swarm-backup.timer").read_text()
    assert f"backup --metrics {out}" in service and "--limit oracle" in service
    assert "SuccessExitStatus" not in service  # a failed backup fails the unit (and BackupFailing fires)
    assert "TimeoutStartSec=6h" in service and "OnCalendar=daily" in timer
    assert "swarm-backup.timer runs the backups" in text and out.parent.is_dir()
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", str(units / "swarm-backup.timer"),
                                 str(units / "swarm-backup.service")],
                                capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "err"})
        assert verify.returncode == 0, verify.stderr
    code, text = invoke(REPO, "schedule", "remove", "--backup", "--unit-dir", str(units))
    assert code == 0 and not list(units.iterdir())
