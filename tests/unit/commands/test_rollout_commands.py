"""A rollout's node commands, run by a real `sh` in a temporary deploy root."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from orchestrator.commands.rollout import install_live_config, run_dir, signal_service


def run(command, *, check: bool = True) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(command.argv, capture_output=True, text=True, check=check)


def config(root: Path, digest: str, files: dict[str, str]) -> None:
    d = root / "configs" / "haproxy" / digest
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)
        (d / name).chmod(0o644)


def test_live_config_holds_exactly_the_files_of_the_digest(tmp_path: Path) -> None:
    config(tmp_path, "aaaa", {"haproxy.cfg": "one\n", "hold.lua": "lua\n"})
    config(tmp_path, "bbbb", {"haproxy.cfg": "two\n"})
    run(install_live_config(str(tmp_path), "haproxy", "aaaa"))
    live = tmp_path / "configs/haproxy/live"
    inode = live.stat().st_ino  # the container mounts this directory: it must stay the same one
    assert (live / "haproxy.cfg").read_text() == "one\n" and (live / "hold.lua").exists()
    run(install_live_config(str(tmp_path), "haproxy", "bbbb"))
    assert live.stat().st_ino == inode
    assert sorted(p.name for p in live.iterdir()) == [".digest", "haproxy.cfg"]
    assert (live / "haproxy.cfg").read_text() == "two\n" and (live / ".digest").read_text() == "bbbb\n"
    assert stat.S_IMODE(live.stat().st_mode) == 0o755  # the service's own user reads it


def test_a_config_the_node_does_not_have_is_refused_and_live_is_left_alone(tmp_path: Path) -> None:
    config(tmp_path, "aaaa", {"haproxy.cfg": "one\n"})
    run(install_live_config(str(tmp_path), "haproxy", "aaaa"))
    failed = run(install_live_config(str(tmp_path), "haproxy", "cccc"), check=False)
    assert failed.returncode == 1 and "config cccc of haproxy is not on the node" in failed.stderr
    assert (tmp_path / "configs/haproxy/live/haproxy.cfg").read_text() == "one\n"


def test_run_dir_is_writable_by_the_service_and_closed_to_others(tmp_path: Path) -> None:
    run(run_dir(str(tmp_path), "haproxy"))
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "run/haproxy").stat().st_mode) == 0o777
    run(run_dir(str(tmp_path), "haproxy"))  # again: the same


@pytest.mark.parametrize("bad", ["x; rm -rf /", "../x", "live", "", "a b"])
def test_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        install_live_config("/opt/ai-swarm", bad, "aaaa")
    with pytest.raises(ValueError):
        run_dir("/opt/ai-swarm", bad)


def test_a_signal_is_a_signal_name() -> None:
    assert signal_service("swarm-oracle", "haproxy", "SIGUSR2").describe() == "signal-service swarm-oracle haproxy SIGUSR2"
    with pytest.raises(ValueError):
        signal_service("swarm-oracle", "haproxy", "9; reboot")
