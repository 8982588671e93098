"""The engine's node-side scripts, run by a real /bin/sh on a temporary deploy root.

Lock-then-look, the release upload (complete or not at all), undoing it, and the
rollback release builder: what they leave on disk, not how they are spelled.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator import commands as c
from orchestrator.commands import Script
from orchestrator.engine.context import RunContext
from orchestrator.engine.session import Look, Session
from orchestrator.events import EventBus
from orchestrator.facts.node import LookRequest
from orchestrator.transport.fleet import Fleet
from orchestrator.transport.local import LocalTransport


def run(*commands: c.Command, input: bytes | None = None, stop: bool = True):
    return asyncio.run(LocalTransport("n1").run(Script.of(*commands, stop_on_error=stop), check=False, input=input))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "opt" / "ai-swarm"
    (r / "releases" / "R1").mkdir(parents=True)
    (r / "releases" / "R1" / "applied.txt").write_text("vault 111\nconsul 222\n")
    (r / "current").symlink_to("releases/R1")
    return r


class Me(RunContext):
    def holder(self) -> str:
        return '{"by": "me", "pid": 1}'


def look(root: Path, expected: list[str], run_id: str = "run1", force_lock: bool = False,
         preflight: tuple[c.Command, ...] = (), **kw) -> object:
    """The session's lock-then-look on a real /bin/sh (the lock stays: this is not a whole run)."""
    request = LookRequest(deploy_root=str(root), expected=tuple(expected), docker=False, **kw)
    session = Session(Fleet([LocalTransport("n1")]), Me(run_id, "me", "deploy", ()), EventBus(), {"n1": str(root)})

    async def go() -> object:
        state = (await session.look({"n1": Look(request, "force" if force_lock else "auto", preflight)}))["n1"]
        return state, session.extra["n1"]

    state, extra = asyncio.run(go())
    return SimpleNamespace(lock=state.lock, preflight=extra)  # type: ignore[attr-defined]


def test_a_node_that_runs_what_is_wanted_is_not_locked(root: Path) -> None:
    state = look(root, ["vault 111", "consul 222"])
    assert not state.lock.taken and not (root / ".lock").exists()


def test_a_difference_takes_the_lock_first(root: Path) -> None:
    state = look(root, ["vault 111", "consul 999"])
    assert state.lock.taken
    assert json.loads((root / ".lock" / "holder.json").read_text())["by"] == "me"
    assert (root / ".lock" / "run-run1").exists()


def test_someone_elses_lock_is_reported_with_its_holder(root: Path) -> None:
    (root / ".lock").mkdir()
    (root / ".lock" / "holder.json").write_text('{"by": "alice@ctl", "pid": 42}')
    state = look(root, ["vault 999"], run_id="run2")
    assert not state.lock.taken and state.lock.held_by == {"by": "alice@ctl", "pid": 42}
    unchanged = look(root, ["vault 111"], run_id="run2")
    assert not unchanged.lock.taken and unchanged.lock.held_by["by"] == "alice@ctl"


def test_a_run_finishing_its_own_unwind_gets_its_lock_back(root: Path) -> None:
    assert look(root, [], force_lock=True, run_id="abc").lock.taken
    assert look(root, [], force_lock=True, run_id="abc").lock.taken     # its own marker: still its lock
    assert not look(root, [], force_lock=True, run_id="zzz").lock.taken  # another run: held


def test_only_a_whole_applied_line_matches(root: Path) -> None:
    """`service hash` lines compare whole: a prefix, a suffix or a longer line is a difference."""
    for other in ("vault 11", "vault 1111", "ault 111", "vault  111", "vault 111|consul 222"):
        assert look(root, [other], run_id=f"r{len(other)}").lock.taken, other
        (root / ".lock").exists() and run(c.unlock_if_mine(str(root), f"r{len(other)}"))


def test_the_last_applied_line_counts_without_its_newline(root: Path) -> None:
    (root / "releases/R1/applied.txt").write_text("vault 111\nconsul 222")
    assert not look(root, ["consul 222", "vault 111"]).lock.taken


def test_a_release_without_applied_lines_is_a_difference(root: Path) -> None:
    (root / "releases/R1/applied.txt").unlink()
    assert look(root, ["vault 111"]).lock.taken


def test_a_missing_directory_counts_as_a_difference(root: Path) -> None:
    assert look(root, ["vault 111"], directories=("data",)).lock.taken


def test_preflight_steps_run_only_where_the_lock_was_taken(root: Path) -> None:
    probe = (c.uname_m(),)
    free = look(root, ["vault 111"], preflight=probe)
    assert free.preflight[0].exit_status == c.SKIPPED_EXIT
    locked = look(root, ["vault 999"], preflight=probe, run_id="run3")
    assert locked.preflight[0].ok and locked.preflight[0].stdout.strip()


def test_unlock_if_mine_never_breaks_someone_elses_lock(root: Path) -> None:
    look(root, ["x 1"], run_id="mine")
    run(c.unlock_if_mine(str(root), "other"))
    assert (root / ".lock").exists()
    run(c.unlock_if_mine(str(root), "mine"))
    assert not (root / ".lock").exists()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600 if "/env/" in name else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_complete_upload_lands_whole_with_its_config_store(root: Path) -> None:
    tar = _tar({".tmp-R2/compose.yml": b"services: {}\n", ".tmp-R2/env/a.env": b"A='1'\n",
                ".tmp-R2.store/haproxy/d1/haproxy.cfg": b"global\n"})
    assert run(c.extract_release(str(root), "R2"), input=tar).ok
    assert (root / "releases/R2/compose.yml").read_text() == "services: {}\n"
    assert oct((root / "releases/R2/env/a.env").stat().st_mode & 0o777) == "0o600"
    assert (root / "configs/haproxy/d1/haproxy.cfg").read_text() == "global\n"
    assert not list((root / "releases").glob(".tmp-*"))


def test_an_existing_config_store_directory_is_never_overwritten(root: Path) -> None:
    (root / "configs/haproxy/d1").mkdir(parents=True)
    (root / "configs/haproxy/d1/haproxy.cfg").write_text("in use\n")
    tar = _tar({".tmp-R2/compose.yml": b"x\n", ".tmp-R2.store/haproxy/d1/haproxy.cfg": b"other\n"})
    assert run(c.extract_release(str(root), "R2"), input=tar).ok
    assert (root / "configs/haproxy/d1/haproxy.cfg").read_text() == "in use\n"


def test_a_broken_upload_leaves_no_release_and_no_config(root: Path) -> None:
    good = _tar({".tmp-R3/compose.yml": b"x\n", ".tmp-R3.store/grafana/d9/ds.yml": b"y\n"})
    result = run(c.extract_release(str(root), "R3"), input=good[: 3 * 512 + 10])  # dropped mid-file
    assert not result.ok
    assert not (root / "releases/R3").exists() and not (root / "configs/grafana/d9").exists()
    assert run(c.remove_release(str(root), "R3")).ok
    assert not list((root / "releases").glob(".tmp-*"))
    assert [p.name for p in (root / "releases").iterdir()] == ["R1"]


def test_a_rollback_release_is_the_current_one_with_some_services_from_the_target(root: Path) -> None:
    old = root / "releases" / "R0"
    (old / "env").mkdir(parents=True)
    (old / "env" / "haproxy.env").write_text("OLD=1\n")
    (old / "config" / "haproxy").mkdir(parents=True)
    (old / "config" / "haproxy" / "haproxy.cfg").write_text("old cfg\n")
    cur = root / "releases" / "R1"
    (cur / "env").mkdir()
    (cur / "env" / "haproxy.env").write_text("NEW=1\n")
    (cur / "env" / "vault.env").write_text("V=1\n")
    (cur / "env" / "grafana.env").write_text("G=1\n")
    tar = _tar({".tmp-R4/compose.yml": b"merged\n", ".tmp-R4/release.json": b"{}\n"})
    result = run(c.remove_stale_tmp(str(root)), c.copy_release(str(root), "R1", "R4"),
                 c.take_services(str(root), "R0", "R4", ["haproxy", "grafana"]),
                 c.extract_release(str(root), "R4"), input=tar)
    assert result.ok, result.stderr
    new = root / "releases" / "R4"
    assert (new / "env" / "haproxy.env").read_text() == "OLD=1\n"      # from the target
    assert not (new / "env" / "grafana.env").exists()                  # the target had none
    assert (new / "env" / "vault.env").read_text() == "V=1\n"          # another phase: as it runs
    assert (new / "config" / "haproxy" / "haproxy.cfg").read_text() == "old cfg\n"
    assert (new / "compose.yml").read_text() == "merged\n"
    assert (cur / "env" / "haproxy.env").read_text() == "NEW=1\n"      # the current one untouched


def test_release_ids_that_are_not_names_are_refused() -> None:
    for bad in ("", "../x", ".tmp-1", "a/b"):
        with pytest.raises(ValueError):
            c.remove_release("/opt/ai-swarm", bad)


# --------------------------------------------------------------------------- the look's docker reads

FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
case "$1 $2" in
  "ps --all") [ -f "$DOCKER_DIR/ps-fails" ] && { echo "Cannot connect to the Docker daemon" >&2; exit 1; }
              cat "$DOCKER_DIR/ps" ;;
  "network inspect") [ -f "$DOCKER_DIR/net-$4" ] ;;
esac
"""


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` on PATH answering `ps` from a file and `network inspect` from what exists."""
    bin_dir, state = tmp_path / "bin", tmp_path / "docker"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    (state / "ps").write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("DOCKER_DIR", str(state))
    monkeypatch.setenv("DOCKER_LOG", str(state / "log"))
    return state


def container(name: str, networks: str) -> str:
    """A `docker ps --format '{{json .}}'` line (compact, as docker writes it)."""
    return json.dumps({"Names": name, "State": "running", "Networks": networks,
                       "Labels": f"com.docker.compose.service={name},com.docker.compose.project=swarm-n1"},
                      separators=(",", ":"))


def docker_look(root: Path) -> object:
    request = LookRequest(deploy_root=str(root), network="aiswarm")
    session = Session(Fleet([LocalTransport("n1")]), Me("run1", "me", "deploy", ()), EventBus(), {"n1": str(root)})
    return asyncio.run(session.look({"n1": Look(request, "none")}))["n1"]


def test_a_node_whose_containers_use_the_network_answers_with_one_docker_process(root: Path, docker: Path) -> None:
    (docker / "ps").write_text(container("litellm", "aiswarm") + "\n" + container("haproxy", "host,aiswarm") + "\n")
    state = docker_look(root)
    assert state.infra_ready and state.is_running("litellm", "swarm-n1")
    assert (docker / "log").read_text().splitlines() == ["ps --all --no-trunc --format {{json .}}"]


def test_the_network_is_asked_for_when_no_container_names_it(root: Path, docker: Path) -> None:
    (docker / "ps").write_text(container("litellm", "aiswarm2") + "\n"   # a longer name is not it
                               + container("aiswarm", "bridge") + "\n")  # nor a name elsewhere
    assert not docker_look(root).infra_ready                                # and it does not exist
    assert "network inspect -- aiswarm" in (docker / "log").read_text()
    (docker / "net-aiswarm").touch()
    assert docker_look(root).infra_ready


def test_a_docker_that_does_not_answer_is_no_network(root: Path, docker: Path) -> None:
    (docker / "net-aiswarm").touch()
    (docker / "ps-fails").touch()
    state = docker_look(root)
    assert not state.infra_ready and "Cannot connect" in (state.docker_error or "")
