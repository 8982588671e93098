"""Loading the SSH library: asyncssh's search for optional C libraries answers from the loader's
cache, so a run starts no compiler or linker (gcc and ld cost ~30 ms of every command on a
machine without liboqs), and finds the same libraries the standard probe finds there."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.transport.sshlib import loader_cache_lookup

REPO = Path(__file__).resolve().parents[3]

linux_glibc = pytest.mark.skipif(not Path("/sbin/ldconfig").exists() or sys.platform != "linux",
                                 reason="the loader-cache answer is for glibc Linux")


def with_spy_tools(tmp_path: Path, code: str) -> list[str]:
    """Run `code` in a fresh interpreter whose PATH has gcc, cc, ld and objdump that only note
    that they ran (then fail, as for a missing library); the tools that ran, in order."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ran.log"
    for tool in ("gcc", "cc", "ld", "objdump"):
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\necho {tool} >> {log}\nexit 1\n")
        script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return log.read_text().split() if log.exists() else []


@linux_glibc
def test_loading_the_ssh_transport_starts_no_compiler_or_linker(tmp_path: Path) -> None:
    assert with_spy_tools(tmp_path, "import orchestrator.transport.ssh, asyncssh") == []


@linux_glibc
def test_the_stdlib_probe_would_have_started_them(tmp_path: Path) -> None:
    """The spy above can fail: without swarm's answer, asyncssh's probe does run the tools."""
    ran = with_spy_tools(tmp_path, "import ctypes.util; ctypes.util.find_library('swarm-no-such-lib')")
    assert "gcc" in ran


@linux_glibc
@pytest.mark.parametrize("name", ["c", "m", "crypto", "ssl", "nettle", "oqs", "liboqs", "swarm-no-such-lib"])
def test_the_loader_cache_answers_as_the_stdlib_ldconfig_step_does(name: str) -> None:
    lookup = loader_cache_lookup()
    assert lookup is not None
    assert lookup(name) == ctypes.util._findSoname_ldconfig(name)  # type: ignore[attr-defined]


def test_with_ld_library_path_the_library_probes_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library only LD_LIBRARY_PATH names is found by the standard probe's linker step: keep it."""
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/lib")
    assert loader_cache_lookup() is None
