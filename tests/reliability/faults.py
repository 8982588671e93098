"""Staging faults on the lab and checking the one invariant every fault test ends with.

Faults are staged from outside swarm, the way they happen: a signal to the `swarm`
process, a container that keeps dying (the lab images' SWARM_STANDIN_MODE), a node's
link down (its veth), its sshd killed, a small full filesystem under deploy_root, Vault
sealed, Consul or the registry stopped, an image removed. `assert_consistent` then checks
every node: on its previous or its new release, every container of its project running,
no lock, no half-written upload, no pending unwind on the controller — and that no secret
value appears in anything swarm printed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from orchestrator.lab import node as lab_node
from orchestrator.lab.api import Lab
from tests.integration.labtools import REPO, SECRET_VALUES, short_holds

NODES = ("oracle", "starlord", "thanos")
ROOT = "/opt/ai-swarm"


# --------------------------------------------------------------------------- running swarm


@dataclass
class Run:
    """One `swarm` process, its events (JSON lines) and its output."""

    argv: list[str]
    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    stdout: str = ""

    def wait_for(self, kind: str, state: str, timeout: float = 120, **data: Any) -> dict[str, Any]:
        """Read events until one matches (the run is then exactly there)."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"swarm ended before {kind}/{state}: {self.finish().stderr[-2000:]}")
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            self.events.append(event)
            if event["kind"] == kind and event["state"] == state and all(
                    event.get("data", {}).get(k) == v or event.get(k) == v for k, v in data.items()):
                return event
        raise AssertionError(f"no {kind}/{state} event within {timeout}s")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 240) -> Run:
        out, err = self.proc.communicate(timeout=timeout)
        self.ended = time.monotonic()
        self.stdout = out
        self.events += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        self.stderr += err
        return self

    @property
    def code(self) -> int:
        assert self.proc.returncode is not None
        return self.proc.returncode

    @property
    def output(self) -> str:
        return json.dumps(self.events) + self.stdout + self.stderr

    def message(self) -> str:
        return self.stderr

    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


def start(lab: Lab, inventory: Path, *args: str, state: Path, json_output: bool = True) -> Run:
    env = {**os.environ, "SWARM_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "orchestrator.cli", "--project", str(REPO), "-i", str(inventory),
            *args, *(["--output", "json"] if json_output else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO, start_new_session=True)
    return Run(argv, proc)


def swarm(lab: Lab, inventory: Path, *args: str, state: Path, timeout: float = 300,
          json_output: bool = True) -> Run:
    return start(lab, inventory, *args, state=state, json_output=json_output).finish(timeout)


# --------------------------------------------------------------------------- the invariant


def sh(lab: Lab, node: str, script: str, check: bool = True) -> str:
    done = subprocess.run(lab.ssh_argv(node, script), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 or not check, f"{node}: {script}: {done.stderr}"
    return done.stdout


def current(lab: Lab, node: str) -> str:
    return sh(lab, node, f"readlink {ROOT}/current || true").strip().removeprefix("releases/")


def snapshot(lab: Lab, nodes: tuple[str, ...] = NODES) -> dict[str, str]:
    return {n: current(lab, n) for n in nodes}


def container_problems(lab: Lab, node: str) -> list[str]:
    rows = sh(lab, node, "docker ps -a --filter label=com.docker.compose.project=swarm-" + node
              + " --format '{{.Names}} {{.State}} {{.Status}}'")
    return [r for r in rows.splitlines() if r.split()[1] != "running" or "unhealthy" in r]


def assert_consistent(lab: Lab, before: dict[str, str], run: Run | None = None, *,
                      moved: dict[str, str] | None = None, state: Path | None = None,
                      settle: float = 60) -> None:
    """Every node on its previous release (or, for `moved`, the given new one), every container
    running, no lock, no half-written upload, nothing pending — and no secret printed."""
    for node, release in before.items():
        want = (moved or {}).get(node, release)
        assert current(lab, node) == want, f"{node}: current is {current(lab, node)}, expected {want}"
        leftovers = sh(lab, node, f"ls -a {ROOT} {ROOT}/releases | grep -e '^.lock$' -e '^.tmp-' || true")
        assert not leftovers.strip(), f"{node}: left behind: {leftovers}"
        wait_until(lambda n=node: not container_problems(lab, n), settle,  # type: ignore[misc]
                   f"{node}: containers not all running: {container_problems(lab, node)}")
    if state is not None:
        assert not list(state.glob("pending-unwind-*.json")), "a pending unwind was left"
    if run is not None:
        for value in SECRET_VALUES:
            assert value not in run.output, "a secret value was printed"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline, pause = time.monotonic() + timeout, 0.2
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(pause)
        pause = min(pause * 1.5, 2.0)


# --------------------------------------------------------------------------- inventories


def fast_inventory(lab: Lab, path: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The lab inventory with short holds on every node (fault tests are about what happens,
    not about waiting), a short SSH keepalive (a dead link is noticed in ~6 s), and `change`."""
    data = yaml.safe_load(lab.inventory_path.read_text())
    data["ssh"] = {**data["ssh"], "keepalive_interval": 2, "keepalive_count": 3, "connect_timeout": 4}
    short_holds(data)
    if change:
        change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def set_service(data: dict[str, Any], node: str, service: str, **values: Any) -> None:
    data["nodes"][node].setdefault("services", {}).setdefault(service, {}).update(values)


# --------------------------------------------------------------------------- staged faults


def link_down(lab: Lab, node: str) -> None:
    subprocess.run(["ip", "link", "set", lab.spec(node).veth, "down"], check=True)


def link_up(lab: Lab, node: str) -> None:
    subprocess.run(["ip", "link", "set", lab.spec(node).veth, "up"], check=True)


def _in_node(lab: Lab, node: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A shell inside the node's namespaces, entered through its dockerd (sshd may be gone)."""
    pid = (lab.node_dir(node) / "dockerd.pid").read_text().strip()
    argv = ["nsenter", f"--target={pid}", "--net", "--mount", "--uts", "--", "sh", "-c", script]
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def kill_sshd(lab: Lab, node: str) -> None:
    """Every sshd of the node: the listener and each session (its connections drop)."""
    # "[s]shd" so the pattern does not match the shell that runs pkill (its own command line)
    config = shlex.quote("[s]shd.*" + str(lab.node_dir(node) / "sshd_config"))
    _in_node(lab, node, f"pkill -KILL -f {config} ; pkill -KILL -f '[s]shd: swarm' ; true")


def answers(lab: Lab, node: str) -> bool:
    """The node's sshd lets swarm's user in."""
    try:
        return subprocess.run(lab.ssh_argv(node, "true"), capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start_sshd(lab: Lab, node: str) -> None:
    config = lab.node_dir(node) / "sshd_config"
    _in_node(lab, node, f"/usr/sbin/sshd -f {shlex.quote(str(config))} -E {shlex.quote(str(lab.node_dir(node) / 'logs' / 'sshd-restarted.log'))}")
    wait_until(lambda: answers(lab, node), 30, f"{node}: sshd did not come back")
    pid = _in_node(lab, node, f"pgrep -o -f {shlex.quote('[s]shd -f ' + str(config))}").stdout.split()[0]
    (lab.node_dir(node) / "init.pid").write_text(pid + "\n")  # exec_on enters through it


@contextmanager
def sshd_drops_during(lab: Lab, node: str, program: str) -> Iterator[None]:
    """While `program` (tar, docker) runs on the node, its SSH session is killed: the link
    drops mid-command. A wrapper bind-mounted over the program does it, then runs the real one."""
    real = f"/usr/bin/{program}"
    keep = lab.node_dir(node) / f"real-{program}"
    wrapper = lab.node_dir(node) / f"drop-{program}"
    subprocess.run(["cp", real, str(keep)], check=True)
    wrapper.write_text(f"#!/bin/sh\n# staged by the fault suite: the SSH session dies mid-{program}\n"
                       f"pkill -KILL -f 'sshd: swarm' &\nsleep 0.2\nexec {shlex.quote(str(keep))} \"$@\"\n")
    wrapper.chmod(0o755)
    _in_node(lab, node, f"mount --bind {shlex.quote(str(wrapper))} {real}")
    try:
        yield
    finally:
        _in_node(lab, node, f"umount {real}", check=False)


@contextmanager
def small_disk(lab: Lab, node: str, size_kib: int = 2048) -> Iterator[None]:
    """deploy_root on a small filesystem that is almost full (its contents copied in first)."""
    root = ROOT
    # sized to what deploy_root holds now (the model store's weights among it) + size_kib
    script = (f"set -e; mkdir -p /tmp/swarm-disk-save; cp -a {root}/. /tmp/swarm-disk-save/; "
              f"used=$(du -sk {root} | cut -f1); "
              f"mount -t tmpfs -o size=$((used + {size_kib}))k swarm-small {root}; "
              f"cp -a /tmp/swarm-disk-save/. {root}/; chown -R swarm:swarm {root}; "
              f"dd if=/dev/zero of={root}/.filler bs=1k count=$(( $(df -k --output=avail {root} | tail -1) - 8 )) "
              "2>/dev/null || true")
    try:
        _in_node(lab, node, script)
    except subprocess.CalledProcessError:  # never leave the node on a half-made small disk
        _in_node(lab, node, f"umount {root}; rm -rf /tmp/swarm-disk-save", check=False)
        raise
    try:
        yield
    finally:
        _in_node(lab, node, f"rm -f {root}/.filler; mkdir -p /tmp/swarm-disk-back; "
                            f"cp -a {root}/. /tmp/swarm-disk-back/; umount {root}; "
                            f"cp -a /tmp/swarm-disk-back/. {root}/; rm -rf /tmp/swarm-disk-save /tmp/swarm-disk-back",
                 check=False)


def consul_registrations(lab: Lab) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"http://{lab.nodes['oracle']}:8500/v1/agent/services", timeout=5)
    answer.raise_for_status()
    return dict(answer.json())


def docker_on(lab: Lab, node: str, *argv: str) -> str:
    return sh(lab, node, shlex.join(["docker", *argv]))


def release_of(lab: Lab, node: str, release: str) -> dict[str, Any]:
    return dict(json.loads(sh(lab, node, f"cat {ROOT}/releases/{release}/release.json")))


__all__ = ["lab_node"]
