"""The conformance checks as pure functions: expected (from the render) + facts -> problems.

Every function returns a list of human-readable problems, empty when the node conforms;
the test modules only assert that the list is empty, so a failure message says exactly
what differs. Nothing here touches the network, so each check is unit-tested with
recorded `docker inspect` / `ss` / `find` output.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.conformance.facts import FileInfo, Listener
from orchestrator.facts.gpu import GpuReading, check_thermal
from orchestrator.render.services import Port

SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"
ALL_ADDRESSES = frozenset({"0.0.0.0", "::", "*", ""})
ROOT_USERS = frozenset({"", "0", "root"})
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


# ---------------------------------------------------------------- containers


def labels(container: Mapping[str, Any]) -> dict[str, str]:
    return dict((container.get("Config") or {}).get("Labels") or {})


def name_of(container: Mapping[str, Any]) -> str:
    return str(container.get("Name", "?")).lstrip("/")


def is_running(container: Mapping[str, Any]) -> bool:
    return bool((container.get("State") or {}).get("Running"))


def find_container(containers: Iterable[Mapping[str, Any]], project: str,
                   service: str) -> Mapping[str, Any] | None:
    """The project's container for `service`; a running one wins over stopped leftovers."""
    mine = [c for c in containers
            if labels(c).get(PROJECT_LABEL) == project and labels(c).get(SERVICE_LABEL) == service]
    mine.sort(key=lambda c: not is_running(c))
    return mine[0] if mine else None


def missing(project: str, service: str) -> list[str]:
    return [f"no container for {service} in compose project {project}"]


def running_problems(container: Mapping[str, Any]) -> list[str]:
    state = container.get("State") or {}
    if state.get("Running") and not state.get("Restarting"):
        return []
    status = state.get("Status", "unknown")
    return [f"{name_of(container)} is {status} (exit code {state.get('ExitCode')}), not running"]


def health_problems(container: Mapping[str, Any]) -> list[str]:
    health = (container.get("State") or {}).get("Health")
    if not health:
        return [f"{name_of(container)} has no healthcheck, but the role defines one"]
    status = health.get("Status")
    if status == "healthy":
        return []
    log = health.get("Log") or []
    last = str(log[-1].get("Output", "")).strip()[:200] if log else ""
    return [f"{name_of(container)} is {status}" + (f": {last}" if last else "")]


def image_problems(expected: str, container: Mapping[str, Any], pin: str | None,
                   image_digests: Mapping[str, Sequence[str]]) -> list[str]:
    actual = (container.get("Config") or {}).get("Image")
    problems = []
    if actual != expected and not str(actual).startswith(f"{expected}@"):   # a release names tag@digest
        problems.append(f"{name_of(container)} runs image {actual}, the render says {expected}")
    if pin:
        digest = pin.rpartition("@")[2]
        repo_digests = image_digests.get(str(container.get("Image", "")), ())
        if not any(d.endswith("@" + digest) for d in repo_digests):
            problems.append(f"{name_of(container)} image digest {', '.join(repo_digests) or 'unknown'} "
                            f"is not the one preflight verified ({pin})")
    return problems


def user_problems(expected: str | None, root_reason: str | None,
                  container: Mapping[str, Any]) -> list[str]:
    actual = str((container.get("Config") or {}).get("User") or "")
    problems = []
    if actual != (expected or ""):
        problems.append(f"{name_of(container)} runs as user {actual or 'root (image default)'!r}, "
                        f"the role says {expected or 'image default'!r}")
    if not root_reason and actual.split(":")[0] in ROOT_USERS:
        problems.append(f"{name_of(container)} runs as root and its role gives no root_reason")
    return problems


def restart_problems(expected: str, container: Mapping[str, Any]) -> list[str]:
    actual = ((container.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
    if actual == (expected or "no"):
        return []
    return [f"{name_of(container)} restart policy is {actual!r}, the role says {expected!r}"]


def parse_bytes(value: str | int) -> int:
    """Docker sizes: `24g`, `256m`, `512MiB`, `1024` (binary units)."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", str(value).lower())
    if not m:
        raise ValueError(f"not a size: {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def limit_problems(compose: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    limits = ((compose.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    host = container.get("HostConfig") or {}
    problems = []
    if "memory" in limits and host.get("Memory") != parse_bytes(limits["memory"]):
        problems.append(f"{name_of(container)} memory limit is {host.get('Memory') or 'none'} bytes, "
                        f"the role says {limits['memory']} ({parse_bytes(limits['memory'])} bytes)")
    if "cpus" in limits:
        expected = round(float(limits["cpus"]) * 1e9)
        if host.get("NanoCpus") != expected:
            problems.append(f"{name_of(container)} CPU limit is {(host.get('NanoCpus') or 0) / 1e9:g}, "
                            f"the role says {limits['cpus']}")
    return problems


def published(container: Mapping[str, Any]) -> dict[tuple[int, int, str], set[str]]:
    """(host port, container port, protocol) -> host IPs, from HostConfig.PortBindings."""
    out: dict[tuple[int, int, str], set[str]] = {}
    bindings = (container.get("HostConfig") or {}).get("PortBindings") or {}
    for key, entries in bindings.items():
        target, _, proto = str(key).partition("/")
        for entry in entries or []:
            port = int(entry.get("HostPort") or 0)
            out.setdefault((port, int(target), proto or "tcp"), set()).add(entry.get("HostIp") or "")
    return out


def port_problems(ports: Sequence[Port], container: Mapping[str, Any]) -> list[str]:
    actual = published(container)
    expected = {(p.port, p.target, p.protocol) for p in ports}
    name = name_of(container)
    problems = [f"{name} does not publish {p}->{t}/{pr}" for p, t, pr in sorted(expected - set(actual))]
    problems += [f"{name} publishes {p}->{t}/{pr}, which the role does not declare"
                 for p, t, pr in sorted(set(actual) - expected)]
    bound = {(p.port, p.target, p.protocol): p.host_ip for p in ports}
    for key, ips in sorted(actual.items()):
        p, _, pr = key
        want = bound.get(key)
        if want:  # the role publishes it on one address (node.bind_address): exactly there
            other = sorted(ip or "all addresses" for ip in ips if ip != want)
            if other:
                problems.append(f"{name} publishes {p}/{pr} on {', '.join(other)}, not only on {want}")
            continue
        narrow = sorted(ip for ip in ips if ip not in ALL_ADDRESSES)
        if key in expected and narrow:
            problems.append(f"{name} publishes {p}/{pr} only on {', '.join(narrow)}, not on all addresses")
    return problems


def gpu_container_problems(container: Mapping[str, Any], devices: str) -> list[str]:
    name = name_of(container)
    problems = []
    runtime = (container.get("HostConfig") or {}).get("Runtime")
    if runtime != "nvidia":
        problems.append(f"{name} runs with runtime {runtime!r}, not nvidia")
    env = dict(str(e).partition("=")[::2] for e in (container.get("Config") or {}).get("Env") or [])
    seen = env.get("NVIDIA_VISIBLE_DEVICES")
    if seen != devices:
        problems.append(f"{name} has NVIDIA_VISIBLE_DEVICES={seen!r}, the render says {devices!r}")
    return problems


# ---------------------------------------------------------------- node


def unknown_listeners(listeners: Iterable[Listener], address: str, known: set[int]) -> list[str]:
    """TCP ports listening on the node's address (or on all addresses) the playbook does not know."""
    reachable = [item for item in listeners if item.address in ALL_ADDRESSES or item.address == address]
    extra = sorted({(item.port, item.address) for item in reachable if item.port not in known})
    return [f"port {port} is listening on {addr or '*'}, and no service of the playbook publishes it"
            for port, addr in extra]


def foreign_containers(containers: Iterable[Mapping[str, Any]], project: str,
                       services: set[str]) -> list[str]:
    """Running containers that are not one of this node's playbook services."""
    problems = []
    for c in containers:
        if not is_running(c):
            continue
        lab = labels(c)
        if lab.get(PROJECT_LABEL) != project:
            ports = ", ".join(f"{p}/{pr}" for p, _, pr in sorted(published(c))) or "no ports"
            image = (c.get("Config") or {}).get("Image")
            problems.append(f"container {name_of(c)} ({image}, {ports}) runs outside the compose project {project}")
        elif lab.get(SERVICE_LABEL) not in services:
            problems.append(f"container {name_of(c)} is service {lab.get(SERVICE_LABEL)!r} of {project}, "
                            "which the playbook does not define on this node")
    return problems


def release_problems(current_target: str | None, release: Mapping[str, Any] | None) -> list[str]:
    if not current_target:
        return ["no current release (deploy_root/current is missing): deploy the node's phases"]
    if release is None:
        return [f"current -> {current_target} has no release.json"]
    if release.get("corrupt"):
        return [f"current -> {current_target}: release.json is not valid JSON"]
    rid = str(release.get("id", ""))
    if current_target.rstrip("/").rpartition("/")[2] != rid:
        return [f"current -> {current_target}, but its release.json says id {rid!r}"]
    return []


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_drift(expected: Mapping[str, bytes], actual: Mapping[str, str], where: str,
               ignore: Iterable[str] = ()) -> list[str]:
    """Rendered files vs the sha256 of the files on the node, both relative to `where`."""
    skip = set(ignore)
    problems = [f"{where}/{path} is missing" for path in sorted(expected) if path not in actual]
    problems += [f"{where}/{path} differs from what `swarm render` produces now"
                 for path in sorted(expected) if path in actual and actual[path] != sha256(expected[path])]
    problems += [f"{where}/{path} is on the node but not in the render"
                 for path in sorted(actual) if path not in expected and path not in skip]
    return problems


def env_file_problems(services: Iterable[str], files: Mapping[str, FileInfo], owner: str) -> list[str]:
    """Each service with secrets has current/env/<svc>.env, mode 0600, owned by the deploy user."""
    problems = []
    for svc in sorted(services):
        path = f"env/{svc}.env"
        info = files.get(path)
        if info is None:
            problems.append(f"current/{path} is missing")
            continue
        if info.mode != 0o600:
            problems.append(f"current/{path} has mode {info.mode:04o}, expected 0600")
        if info.owner != owner:
            problems.append(f"current/{path} is owned by {info.owner}, expected {owner}")
    return problems


def applied_problems(applied: Mapping[str, str], expected: Mapping[str, str]) -> list[str]:
    """release.json's applied hash per service vs the hash of what the render + Vault give now."""
    problems = []
    for svc, want in sorted(expected.items()):
        have = applied.get(svc)
        if have is None:
            problems.append(f"{svc} was never applied by a deploy (not in release.json)")
        elif have != want:
            problems.append(f"{svc} runs definition {have}, the render and Vault give {want} now: redeploy")
    return problems


def secret_file_problems(files: Mapping[str, FileInfo]) -> list[str]:
    return [f"{path} is readable by others (mode {info.mode:04o})"
            for path, info in sorted(files.items()) if info.mode & 0o004]


def socket_problems(stat: str | None) -> list[str]:
    if not stat:
        return ["/var/run/docker.sock not found"]
    mode = int(stat.split()[0], 8)
    if mode & 0o002:
        return [f"/var/run/docker.sock is world-writable ({stat})"]
    return []


def runtime_problems(runtimes: Iterable[str]) -> list[str]:
    found = sorted(runtimes)
    if "nvidia" in found:
        return []
    return [f"docker has no nvidia runtime (runtimes: {', '.join(found) or 'none'})"]


def thermal_problems(gpus: Sequence[GpuReading], limit_c: float, expected: int) -> list[str]:
    if len(gpus) < expected:
        return [f"nvidia-smi lists {len(gpus)} GPU(s), the inventory says {expected}"]
    problems = []
    for reading in gpus:
        finding = check_thermal(reading, limit_c)
        if not finding.ok:  # a temperature the driver does not report cannot be judged either
            problems.append(finding.message)
    return problems


# ---------------------------------------------------------------- real servers answer as themselves

POSTGRES_QUERY = "SELECT current_database(), current_user, version()"


def postgres_query_problems(name: str, exit_code: int, output: str, database: str,
                            user: str) -> list[str]:
    """POSTGRES_QUERY run with psql -tA in the container: a real answer, from the role's db/user."""
    text = output.strip()
    if exit_code != 0:
        return [f"{name}: `{POSTGRES_QUERY}` failed (exit {exit_code}): {text[:200]}"]
    parts = text.split("|", 2)
    if len(parts) != 3:
        return [f"{name}: `{POSTGRES_QUERY}` answered {text[:200]!r}, not three columns"]
    got_db, got_user, version = parts
    problems = []
    if got_db != database:
        problems.append(f"{name} answered from database {got_db!r}, the role says {database!r}")
    if got_user != user:
        problems.append(f"{name} answered as user {got_user!r}, the role says {user!r}")
    if not version.startswith("PostgreSQL "):
        problems.append(f"{name} does not say it is PostgreSQL: {version[:80]!r}")
    return problems


def prometheus_problems(name: str, buildinfo: Mapping[str, Any] | None,
                        loaded: Mapping[str, Any] | None,
                        rendered: Mapping[str, Any]) -> list[str]:
    """/api/v1/status/buildinfo answers with a version; the config Prometheus loaded
    (/api/v1/status/config, parsed) has the rendered global scrape_interval and every job."""
    problems = []
    data = (buildinfo or {}).get("data") or {}
    if (buildinfo or {}).get("status") != "success" or not data.get("version"):
        problems.append(f"{name}: /api/v1/status/buildinfo gave no version ({buildinfo!r:.120})")
    if loaded is None:
        return [*problems, f"{name}: /api/v1/status/config gave no configuration"]
    want = str((rendered.get("global") or {}).get("scrape_interval", ""))
    have = str((loaded.get("global") or {}).get("scrape_interval", ""))
    if want and have != want:
        problems.append(f"{name} scrapes every {have or '?'}, the render says {want}")
    jobs = {str(j.get("job_name")) for j in loaded.get("scrape_configs") or []}
    missing_jobs = sorted({str(j.get("job_name")) for j in rendered.get("scrape_configs") or []}
                          - jobs)
    if missing_jobs:
        problems.append(f"{name} has not loaded scrape job(s) {', '.join(missing_jobs)} of the render")
    return problems
