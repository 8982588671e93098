"""Benchmark swarm against ansible-playbook and pyinfra on the same lab (see docs/bench.md).

    python bench/run.py [--only NAME] [--repeat N] [--out bench/results.json] [--light-lab]

Scenarios (NAME matches a scenario name or its prefix: fleet, light, fleet-ansible, ...):
  fleet-*  no-op re-deploy of the 3-node lab fleet (oracle, starlord, thanos), already deployed:
           swarm is ONE `swarm deploy --phase 1-4`; `fleet-swarm-whole` is the README's form,
           `swarm deploy` (every phase: the optional overflow node, off in the lab, included);
           `fleet-floor` is bench/floor.py, a bare asyncssh script doing the same reads over
           the nodes that answer, in one process
  light-*  no-op over the SSH-only nodes of `swarm lab up --nodes N --light` (--scale 50,200)

Each scenario: one seed run (not measured: brings the tool's own state in place), N timed
runs (each must change nothing), then one counting run under `strace -f -e connect`
(TCP connections to port 22 per host) plus the tool's own counters (swarm TransportStats,
ansible -vvv "SSH: EXEC" lines, pyinfra paramiko sessions). Only lab addresses are used.

--light-lab: bring the 50-node light lab up for the light scenarios (refused while an
integration test run is going), then put the 3-node lab back and deploy phases 1-4 again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = Path(os.environ.get("SWARM_BENCH_DIR", Path.home() / ".cache" / "swarm-bench"))
LAB = Path(os.environ.get("SWARM_LAB_DIR", Path.home() / ".cache" / "swarm-lab"))
FLEET_NODES = ("oracle", "starlord", "thanos")
FLEET_PHASES = ("1-4",)     # one process, every phase (issue 11: the whole fleet in one command)
QUICK = ("fleet-floor", "fleet-swarm", "fleet-swarm-whole")   # measured round-robin (measure_together)
WHOLE = ("",)              # no --phase: every phase, as the README types it (optional overflow off)
LIGHT_INVENTORY = LAB / "inventory.yml"    # what `lab up --nodes N --light` writes
LIGHT_PLAYBOOK = BENCH / "light" / "playbook.yml"
LAB_NET = re.compile(r"^198\.(18|19)\.\d{1,3}\.\d{1,3}$")
RUN_TIMEOUT = 600          # seconds, any single tool invocation
ANSIBLE_PIN = "ansible-core<2.20"   # 2.20+ needs Python 3.12; this machine has 3.11
PYINFRA_PIN = "pyinfra>=3,<4"


def say(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# ------------------------------------------------------------------ tools


def venv_bin(name: str, exe: str) -> Path:
    return WORK / name / "bin" / exe


def ensure_venv(name: str, packages: list[str], exe: str) -> Path:
    """A private venv per tool so their dependencies never touch the project's."""
    path = venv_bin(name, exe)
    if path.exists():
        return path
    say(f"installing {' '.join(packages)} into {WORK / name}")
    subprocess.run([sys.executable, "-m", "venv", str(WORK / name)], check=True)
    subprocess.run([str(venv_bin(name, "pip")), "install", "-q", *packages], check=True)
    return path


def ensure_tools() -> None:
    if not shutil.which("strace"):
        subprocess.run(["apt-get", "install", "-y", "-q", "strace"], check=True)
    ensure_venv("ansible", [ANSIBLE_PIN], "ansible-playbook")
    ensure_venv("pyinfra", [PYINFRA_PIN, "pyyaml"], "pyinfra")


def first_line(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def versions() -> dict[str, str]:
    return {
        "swarm": first_line([sys.executable, "-m", "orchestrator.cli", "--version"]),
        "ansible-core": first_line([str(venv_bin("ansible", "ansible-playbook")), "--version"]),
        "pyinfra": first_line([str(venv_bin("pyinfra", "pyinfra")), "--version"]),
        "openssh": first_line(["ssh", "-V"]),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }


# ------------------------------------------------------------------ inventories


@dataclass(frozen=True)
class Target:
    """A set of lab nodes and how every tool reaches them."""

    group: str
    nodes: dict[str, str]          # name -> address
    user: str
    key: Path
    known_hosts: Path


def load_target(inventory: Path, group: str, only: tuple[str, ...] | None = None) -> Target:
    data = yaml.safe_load(inventory.read_text())
    ssh = data.get("ssh") or {}
    nodes = {n: str(v["address"]) for n, v in data["nodes"].items() if only is None or n in only}
    bad = [a for a in nodes.values() if not LAB_NET.match(a)]
    if bad:
        raise SystemExit(f"refusing non-lab addresses {bad}: only 198.18.0.0/15 is benchmarked")
    return Target(group, nodes, ssh.get("user", "swarm"), Path(ssh["key"]).expanduser(),
                  Path(ssh["known_hosts"]).expanduser())


def write_ansible_inventory(t: Target, path: Path) -> Path:
    lines = [f"[{t.group}]"] + [f"{n} ansible_host={a}" for n, a in t.nodes.items()]
    lines += [f"[{t.group}:vars]", f"ansible_user={t.user}", f"ansible_ssh_private_key_file={t.key}",
              f"ansible_ssh_extra_args=-o UserKnownHostsFile={t.known_hosts} -o StrictHostKeyChecking=yes"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_pyinfra_inventory(t: Target, path: Path) -> Path:
    data = {"ssh_user": t.user, "ssh_key": str(t.key), "ssh_known_hosts_file": str(t.known_hosts),
            "ssh_strict_host_key_checking": "yes"}
    hosts = [(n, {"ssh_hostname": a, **data}) for n, a in t.nodes.items()]
    path.write_text(f"{t.group} = {hosts!r}\n")
    return path


def render_fleet(out: Path) -> Path:
    """The compose projects swarm renders for the lab inventory (what ansible/pyinfra copy)."""
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "--project", str(REPO), "-i",
                    str(LAB / "inventory.yml"), "render", "--out", str(out)],
                   check=True, capture_output=True, timeout=RUN_TIMEOUT)
    return out


# ------------------------------------------------------------------ one tool run


@dataclass
class Call:
    """One process to run; `cleanup` runs after it (e.g. close ssh control masters)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cleanup: Callable[[], None] | None = None


@dataclass
class Outcome:
    seconds: float
    rc: int
    stdout: str
    stderr: str


def run_call(call: Call, prefix: list[str] | None = None) -> Outcome:
    env = {**os.environ, **call.env}
    start = time.perf_counter()
    try:
        proc = subprocess.run((prefix or []) + call.argv, env=env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT, cwd=REPO)
        outcome = Outcome(time.perf_counter() - start, proc.returncode, proc.stdout, proc.stderr)
    finally:
        if call.cleanup:
            call.cleanup()
    return outcome


def strace_connects(call: Call, log: Path) -> Outcome:
    """Run under strace (-D: the tracer is detached, so a lingering ssh ControlPersist
    master does not hold us up; `cleanup` closes it and strace then ends)."""
    outcome = run_call(call, ["strace", "-D", "-f", "-qq", "-e", "trace=connect", "-o", str(log)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and strace_running(log):
        time.sleep(0.2)
    return outcome


def strace_running(log: Path) -> bool:
    out = subprocess.run(["pgrep", "-f", f"strace -D -f -qq -e trace=connect -o {log}"],
                         capture_output=True, text=True)
    return bool(out.stdout.strip())


def tcp22_per_address(log: Path) -> Counter[str]:
    """TCP connections to port 22 per address. A non-blocking connect that gevent finishes
    with a second connect() on the same fd (EINPROGRESS, then = 0) is one connection.
    strace prefixes lines with the pid only once the traced command has forked."""
    pattern = re.compile(
        r'^(?:(\d+) +)?connect\((\d+), \{sa_family=AF_INET, sin_port=htons\(22\), '
        r'sin_addr=inet_addr\("([\d.]+)"\)\}, \d+(?:\) = (.*)| <unfinished \.\.\.>)$'
    )
    counts: Counter[str] = Counter()
    pending: set[tuple[str, str, str]] = set()
    for line in log.read_text(errors="replace").splitlines():
        m = pattern.match(line)
        if not m:
            continue
        pid, fd, addr, result = m.groups()
        result = result or "unfinished"
        key = (pid, fd, addr)
        if key in pending and not result.startswith("-1 EINPROGRESS"):
            pending.discard(key)
            continue
        if result.startswith("-1 EINPROGRESS"):
            pending.add(key)
        counts[addr] += 1
    return counts


# ------------------------------------------------------------------ tools as scenarios


class Tool:
    """How one tool runs a scenario: the calls of one sample, no-op check, counters."""

    name = "?"

    def seed(self) -> list[Outcome]:
        """One unmeasured run that puts the tool's own state (copied files) in place."""
        return [run_call(c) for c in self.calls(False)]

    def calls(self, counting: bool) -> list[Call]:
        raise NotImplementedError

    def check_noop(self, outcome: Outcome) -> str | None:
        """None when the run succeeded and changed nothing; else why not."""
        raise NotImplementedError

    def commands_per_host(self, outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
        raise NotImplementedError


class Swarm(Tool):
    name = "swarm"

    def __init__(self, inventory: Path, playbook: Path | None, phases: tuple[str, ...],
                 seed_deploys: bool = False) -> None:
        self.inventory, self.playbook, self.phases = inventory, playbook, phases
        self.seed_deploys = seed_deploys    # only on the bench's own light lab
        self.stats_files: list[Path] = []

    def calls(self, counting: bool, check: bool = False) -> list[Call]:
        out = []
        self.stats_files = []
        for phase in self.phases:
            entry = [str(BENCH / "swarm_counted.py")] if counting else ["-m", "orchestrator.cli"]
            argv = [sys.executable, *entry, "-i", str(self.inventory)]
            if self.playbook:
                argv += ["--playbook", str(self.playbook)]
            argv += ["deploy", *(["--phase", phase] if phase else []), "--output", "json",
                     *(["--check"] if check else [])]
            env = {}
            if counting:
                stats = Path(tempfile.mkdtemp(prefix="swarm-stats-", dir=WORK)) / "stats.json"
                self.stats_files.append(stats)
                env["SWARM_BENCH_STATS"] = str(stats)
            out.append(Call(argv, env))
        return out

    def seed(self) -> list[Outcome]:
        """Never deploy to the shared fleet: `--check` must already say nothing would change."""
        if self.seed_deploys:
            # The first (changing) run on fresh light nodes: its preflight checks the docker
            # engine even for a phase with no services and no network, which SSH-only nodes
            # lack; measured no-op runs never run preflight (it only runs on changed nodes).
            calls = self.calls(False)
            for c in calls:
                c.argv.append("--skip-preflight")
            seeded = [run_call(c) for c in calls]
            # then the measured command once (its own plan record: --skip-preflight is part
            # of the key), so the first timed run is a steady-state no-op like the others
            return seeded + [run_call(c) for c in self.calls(False)]
        outcomes = [run_call(c) for c in self.calls(False, check=True)]
        for o in outcomes:
            events = [json.loads(x) for x in o.stdout.splitlines() if x.startswith("{")]
            changed = [e for e in events if e.get("kind") == "check" and e.get("state") != "unchanged"]
            if o.rc != 0 or changed:
                raise SystemExit(f"swarm --check: the lab is not in the deployed state, not benchmarking "
                                 f"(rc={o.rc}, {changed[:3]}): {o.stderr.strip()[-300:]}")
        # a real (no-op) run as well: it leaves the plan record the measured runs use, as an
        # operator's previous run would have
        return outcomes + [run_call(c) for c in self.calls(False)]

    @staticmethod
    def fast_path(outcome: Outcome) -> bool:
        """The run went the no-op fast path (a plan record vouched for it)."""
        return "as planned last time" in outcome.stdout.partition("\n")[0]

    def check_noop(self, outcome: Outcome) -> str | None:
        events = [json.loads(x) for x in outcome.stdout.splitlines() if x.startswith("{")]
        runs = [e for e in events if e.get("kind") == "run" and e.get("state") != "start"]
        if outcome.rc != 0 or not runs or runs[-1]["state"] != "unchanged":
            return f"rc={outcome.rc} last run event {runs[-1] if runs else None}: {outcome.stderr.strip()[-300:]}"
        return None

    def commands_per_host(self, outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
        per: dict[str, dict[str, int]] = {}
        for path in self.stats_files:
            for host, transports in json.loads(path.read_text()).items():
                row = per.setdefault(host, {"connections": 0, "commands": 0, "puts": 0, "gets": 0})
                for t in transports:
                    for k in row:
                        row[k] += t[k]
        return per


class Floor(Tool):
    """bench/floor.py: connect to every node, one read each, exit — what SSH alone costs."""

    name = "floor"

    def __init__(self, inventory: Path, docker: bool) -> None:
        self.inventory, self.docker = inventory, docker

    def calls(self, counting: bool) -> list[Call]:
        return [Call([sys.executable, str(BENCH / "floor.py"), str(self.inventory),
                      *(["--docker"] if self.docker else [])])]

    def check_noop(self, outcome: Outcome) -> str | None:
        return None if outcome.rc == 0 else f"rc={outcome.rc}: {outcome.stderr[-300:]}"

    def commands_per_host(self, outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
        return {}


class Ansible(Tool):
    def __init__(self, inventory: Path, playbook: Path, extra: list[str], pipelining: bool) -> None:
        self.inventory, self.playbook, self.extra, self.pipelining = inventory, playbook, extra, pipelining
        self.name = "ansible-pipelining" if pipelining else "ansible"

    def calls(self, counting: bool) -> list[Call]:
        control = Path(tempfile.mkdtemp(prefix="ansible-cp-", dir=WORK))
        env = {"ANSIBLE_CONFIG": str(BENCH / "ansible" / "ansible.cfg"),
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
               "ANSIBLE_PIPELINING": str(self.pipelining), "ANSIBLE_NOCOLOR": "1"}
        argv = [str(venv_bin("ansible", "ansible-playbook")), "-i", str(self.inventory), str(self.playbook),
                *self.extra, *(["-vvv"] if counting else [])]
        return [Call(argv, env, cleanup=lambda: close_masters(control))]

    def check_noop(self, outcome: Outcome) -> str | None:
        recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                           outcome.stdout, re.M)
        bad = [r for r in recap if r[1:] != ("0", "0", "0")]
        if outcome.rc != 0 or not recap or bad:
            return f"rc={outcome.rc} recap {bad or 'missing'}: {(outcome.stdout + outcome.stderr)[-400:]}"
        return None

    def commands_per_host(self, outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
        per: dict[str, dict[str, int]] = {}
        text = "\n".join(o.stdout for o in outcomes)
        for m in re.finditer(r"^<([\d.]+)> SSH: EXEC (\S+)", text, re.M):
            row = per.setdefault(m.group(1), {"ssh_commands": 0, "file_transfers": 0})
            row["file_transfers" if m.group(2) in ("sftp", "scp") else "ssh_commands"] += 1
        return per


def close_masters(control: Path) -> None:
    """End this run's ssh ControlPersist masters, so no run reuses an earlier one."""
    for sock in sorted(control.glob("*"))[:500]:
        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "lab-node"],
                       capture_output=True, timeout=30)
    shutil.rmtree(control, ignore_errors=True)


class Pyinfra(Tool):
    name = "pyinfra"

    def __init__(self, inventory: Path, deploy: Path, env: dict[str, str]) -> None:
        self.inventory, self.deploy, self.env = inventory, deploy, env
        self.stats = Path(tempfile.mkdtemp(prefix="pyinfra-stats-", dir=WORK)) / "stats.json"

    def calls(self, counting: bool) -> list[Call]:
        if counting:
            argv = [str(venv_bin("pyinfra", "python")), str(BENCH / "pyinfra" / "counted.py")]
            env = {**self.env, "PYINFRA_BENCH_STATS": str(self.stats)}
        else:
            argv, env = [str(venv_bin("pyinfra", "pyinfra"))], dict(self.env)
        return [Call(argv + [str(self.inventory), str(self.deploy), "-y"], env)]

    def check_noop(self, outcome: Outcome) -> str | None:
        text = outcome.stdout + outcome.stderr  # pyinfra logs its results to stderr
        total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
        if outcome.rc != 0 or not total or total.group(2) != "-" or total.group(3) != "-":
            return f"rc={outcome.rc} totals {total.groups() if total else None}: {text[-400:]}"
        return None

    def commands_per_host(self, outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
        data = json.loads(self.stats.read_text())
        return {h: {"sessions": v["sessions"]} for h, v in data.items()}


# ------------------------------------------------------------------ measuring


def run_sample(tool: Tool, counting: bool = False, log: Path | None = None) -> tuple[float, list[Outcome]]:
    outcomes = []
    for call in tool.calls(counting):
        outcomes.append(strace_connects(call, log) if log else run_call(call))
        if log:
            log = log.with_name(log.name + ".next")
    return sum(o.seconds for o in outcomes), outcomes


def measure(scenario: str, tool: Tool, target: Target, repeat: int) -> dict[str, object]:
    return measure_together({scenario: tool}, target, repeat)[scenario]


def measure_together(tools: dict[str, Tool], target: Target, repeat: int) -> dict[str, dict[str, object]]:
    """Seed every tool, then take the samples round-robin (one of each, `repeat` times): a
    machine that gets slower or faster during the run moves every tool alike, so the ratios
    between them (x floor) do not depend on which tool ran in which minute."""
    seeds = {}
    for scenario, tool in tools.items():
        say(f"[{scenario}] seed run (not measured)")
        seeds[scenario] = tool.seed()
    samples: dict[str, list[float]] = {s: [] for s in tools}
    per_call: dict[str, list[list[float]]] = {s: [] for s in tools}
    fast = dict.fromkeys(tools, 0)
    for i in range(repeat):
        for scenario, tool in tools.items():
            seconds, outcomes = run_sample(tool)
            fast[scenario] += all(Swarm.fast_path(o) for o in outcomes) if isinstance(tool, Swarm) else 0
            for o in outcomes:
                why = tool.check_noop(o)
                if why:
                    raise SystemExit(f"[{scenario}] run {i + 1} was not a clean no-op: {why}")
            samples[scenario].append(seconds)
            per_call[scenario].append([round(o.seconds, 3) for o in outcomes])
            say(f"[{scenario}] run {i + 1}/{repeat}: {seconds:.2f}s")
    out = {}
    for scenario, tool in tools.items():
        counts = count_run(scenario, tool)
        got = samples[scenario]
        out[scenario] = {
            "tool": tool.name, "hosts": len(target.nodes),
            "median_s": round(statistics.median(got), 3), "min_s": round(min(got), 3),
            "samples_s": [round(s, 3) for s in got], "per_invocation_s": per_call[scenario],
            "seed_rc": [o.rc for o in seeds[scenario]], "peak_rss_mb": peak_rss_mb(tool), **counts,
            **({"fast_path_runs": fast[scenario]} if isinstance(tool, Swarm) else {}),
            **({"interleaved_with": sorted(set(tools) - {scenario})} if len(tools) > 1 else {}),
        }
    return out


def peak_rss_mb(tool: Tool) -> float | None:
    """The largest resident set of one sample's processes (GNU time's %M), in MB."""
    if not shutil.which("time") and not Path("/usr/bin/time").exists():
        return None
    peak = 0
    for call in tool.calls(False):
        out = run_call(Call(["/usr/bin/time", "-f", "RSS=%M", *call.argv], call.env, call.cleanup))
        found = re.findall(r"RSS=(\d+)", out.stderr)
        peak = max([peak, *map(int, found)])
    return round(peak / 1024, 1) if peak else None


def count_run(scenario: str, tool: Tool) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-strace-", dir=WORK))
    _, outcomes = run_sample(tool, counting=True, log=tmp / "connect.log")
    tcp: Counter[str] = Counter()
    for log in tmp.glob("connect.log*"):
        tcp.update(tcp22_per_address(log))
    per_host = tool.commands_per_host(outcomes)
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {
        "tcp_connections_per_host": summarize(tcp.values()),
        "remote_per_host": {
            k: summarize(v[k] for v in per_host.values())
            for k in sorted({k for v in per_host.values() for k in v})
        },
        "remote_by_host": per_host,
    }
    say(f"[{scenario}] counting run: tcp {counts['tcp_connections_per_host']} {counts['remote_per_host']}")
    return counts


def summarize(values: object) -> dict[str, float]:
    vals = list(values)  # type: ignore[call-overload]
    if not vals:
        return {}
    return {"min": min(vals), "max": max(vals), "mean": round(sum(vals) / len(vals), 2), "hosts": len(vals)}


# ------------------------------------------------------------------ scenarios


def fleet_tools(work: Path) -> tuple[Target, dict[str, Tool]]:
    target = load_target(LAB / "inventory.yml", "lab", FLEET_NODES)
    render = render_fleet(work / "render")
    ans_inv = write_ansible_inventory(target, work / "fleet-ansible.ini")
    py_inv = write_pyinfra_inventory(target, work / "fleet_pyinfra_inventory.py")
    extra = ["-e", f"bench_render_dir={render}"]
    return target, {
        "fleet-swarm": Swarm(LAB / "inventory.yml", None, FLEET_PHASES),
        "fleet-swarm-whole": Swarm(LAB / "inventory.yml", None, WHOLE),
        "fleet-ansible": Ansible(ans_inv, BENCH / "ansible" / "fleet.yml", extra, False),
        "fleet-ansible-pipelining": Ansible(ans_inv, BENCH / "ansible" / "fleet.yml", extra, True),
        "fleet-pyinfra": Pyinfra(py_inv, BENCH / "pyinfra" / "fleet.py", {"BENCH_RENDER_DIR": str(render)}),
        "fleet-floor": Floor(LAB / "inventory.yml", docker=True),
    }


def light_tools(work: Path) -> tuple[Target, dict[str, Tool]]:
    target = load_target(LIGHT_INVENTORY, "light")
    ans_inv = write_ansible_inventory(target, work / "light-ansible.ini")
    py_inv = write_pyinfra_inventory(target, work / "light_pyinfra_inventory.py")
    return target, {
        "light-swarm": Swarm(LIGHT_INVENTORY, LIGHT_PLAYBOOK, ("1",), seed_deploys=True),
        "light-ansible": Ansible(ans_inv, BENCH / "ansible" / "light.yml", [], False),
        "light-ansible-pipelining": Ansible(ans_inv, BENCH / "ansible" / "light.yml", [], True),
        "light-pyinfra": Pyinfra(py_inv, BENCH / "pyinfra" / "light.py", {}),
        "light-floor": Floor(LIGHT_INVENTORY, docker=False),
    }


def selected(names: list[str], only: str | None) -> list[str]:
    return [n for n in names if only is None or n == only or n.startswith(only + "-") or n.startswith(only)]


# ------------------------------------------------------------------ lab handling


def swarm_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    say(f"$ swarm {' '.join(args)}")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=1800)
    if check and proc.returncode != 0:
        raise SystemExit(f"swarm {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-600:]}")
    return proc






def fleet_is_deployed() -> bool:
    inv = str(LAB / "inventory.yml")
    for phase in FLEET_PHASES:
        proc = swarm_cli("-i", inv, "deploy", "--phase", phase, "--check", check=False)
        if proc.returncode != 0 or "no changes" not in proc.stdout:
            return False
    return True


def light_lab_is_up() -> bool:
    try:
        return bool(json.loads((LAB / "lab.json").read_text()).get("light"))
    except (OSError, ValueError):
        return False




def restore_fleet_lab() -> None:
    """Put the 3-node lab back and deploy phases 1-4 (as tests/integration's `deployed` fixture)."""
    swarm_cli("lab", "up", "--nodes", ",".join(FLEET_NODES))
    deploy_fleet()


def deploy_fleet() -> None:
    """Phases 1-4 on the 3-node lab, as tests/integration's `deployed` fixture does."""
    inv = str(LAB / "inventory.yml")
    swarm_cli("-i", inv, "deploy", "--phase", "1")
    keys = LAB / "vault-keys.json"
    swarm_cli("-i", inv, "vault", "init" if not keys.exists() else "unseal", "--key-file", str(keys))
    swarm_cli("-i", inv, "secrets", "push", "--env-file", str(REPO / "examples" / "lab-secrets.env"))
    for phase in FLEET_PHASES:
        swarm_cli("-i", inv, "deploy", "--phase", phase)


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="a scenario name or prefix (fleet, light, fleet-swarm, ...)")
    ap.add_argument("--repeat", type=int, default=5, choices=range(1, 51), metavar="N")
    ap.add_argument("--out", type=Path, default=BENCH / "results.json")
    ap.add_argument("--wait", type=int, default=1800, help="seconds to wait for the lab (its lock)")
    ap.add_argument("--deploy-if-needed", action="store_true",
                    help="deploy phases 1-4 first when `deploy --check` shows the fleet is not deployed")
    ap.add_argument("--light-lab", action="store_true",
                    help="bring light labs up for light-* (see --scale), then restore the 3-node fleet")
    ap.add_argument("--scale", default="50", help="light lab sizes, comma separated (e.g. 50,200)")
    args = ap.parse_args()
    from orchestrator.lab import lock

    WORK.mkdir(parents=True, exist_ok=True)
    ensure_tools()
    compile_swarm()
    with lock.hold("bench/run.py", say=say, timeout=args.wait):
        run_all(args)


def compile_swarm() -> None:
    """Byte-compile swarm's package once, as `pip install` does for an installed package. The
    checkout is an editable install, and where PYTHONDONTWRITEBYTECODE is set (this machine's
    sessions set it) every run would otherwise compile ~30 modules from source (~45 ms) that no
    installed swarm pays; the floor and the other tools run from compiled site-packages."""
    import compileall

    compileall.compile_dir(str(REPO / "orchestrator"), quiet=2)


def run_all(args: argparse.Namespace) -> None:
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("scenarios", {})
    results["versions"] = versions()
    work = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    fleet = selected(["fleet-floor", "fleet-swarm", "fleet-swarm-whole", "fleet-ansible", "fleet-ansible-pipelining",
                      "fleet-pyinfra"], args.only)
    light = selected(["light-floor", "light-swarm", "light-ansible", "light-ansible-pipelining", "light-pyinfra"],
                     args.only)
    if fleet:
        if args.deploy_if_needed and not fleet_is_deployed():
            deploy_fleet()
        target, tools = fleet_tools(work)
        quick = [n for n in fleet if n in QUICK]   # sub-second: interleaved, for fair ratios
        if quick:
            results["scenarios"].update(measure_together({n: tools[n] for n in quick}, target, args.repeat))
            save(args.out, results)
        for name in fleet:
            if name not in quick:
                results["scenarios"][name] = measure(name, tools[name], target, args.repeat)
                save(args.out, results)
    if light and not args.light_lab and not light_lab_is_up():
        say("skipping light-*: the light lab is not up (pass --light-lab to bring it up and back)")
        light = []
    if light:
        sizes = [int(s) for s in args.scale.split(",") if s.strip()] if args.light_lab else [0]
        try:
            for size in sizes:
                if size:
                    swarm_cli("lab", "up", "--nodes", str(size), "--light")
                target, tools = light_tools(work)
                for name in light:
                    if size > 50 and "ansible" in name:
                        continue  # ansible at 200 nodes takes minutes per run: the curve has it at 50
                    key = f"light{len(target.nodes)}-{name.split('-', 1)[1]}"
                    results["scenarios"][key] = measure(key, tools[name], target, args.repeat)
                    save(args.out, results)
        finally:
            if args.light_lab:
                restore_fleet_lab()
    sys.stdout.write(table(results) + "\n")


def save(path: Path, results: dict[str, object]) -> None:
    results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.write_text(json.dumps(results, indent=1) + "\n")


def table(results: dict[str, object]) -> str:
    rows = ["| scenario | hosts | median s | min s | x floor | peak RSS MB | TCP conns/host | remote cmds/host |",
            "|---|---|---|---|---|---|---|---|"]
    scenarios = results["scenarios"]  # type: ignore[index]
    for name, r in scenarios.items():  # type: ignore[union-attr]
        if "tcp_connections_per_host" not in r:  # another script's entry (bench/rollout.py)
            continue
        tcp = r["tcp_connections_per_host"]
        remote = "; ".join(f"{k} {v.get('mean')} ({v.get('min')}-{v.get('max')})"
                           for k, v in r["remote_per_host"].items() if k not in ("connections",))
        floor = scenarios.get(name.rsplit("-", 1)[0].split("-")[0] + "-floor") if "-" in name else None
        ratio = f"{r['median_s'] / floor['median_s']:.2f}" if floor and floor.get("median_s") else "-"
        rows.append(f"| {name} | {r['hosts']} | {r['median_s']} | {r['min_s']} | {ratio} | "
                    f"{r.get('peak_rss_mb', '-')} | {tcp.get('mean', '?')} | {remote} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
