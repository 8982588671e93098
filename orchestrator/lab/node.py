"""One lab node: its files on the host, its init script, start, stop and exec.

A node is started as
`nsenter --net=/var/run/netns/lab-<name> unshare --mount --uts --propagation private
--fork sh <node>/init.sh` (nsenter, not `ip netns exec`, which remounts /sys and breaks
dockerd's cgroups). The init script sets the hostname, gives the node its own `/run`
(tmpfs: its own /var/run/docker.sock and sshd pid), `/opt` and `/home/swarm` (bind
mounts of per-node folders) and an overlay on `/usr/local/bin` carrying node-specific
tools (`nvidia-smi` on GPU nodes, a `uname` answering aarch64 on arm64 nodes). Then it
starts dockerd (unless light) and execs sshd — both in the same mount namespace, since
dockerd resolves compose bind-mount sources in its own namespace.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from orchestrator.lab import gpu, proc
from orchestrator.lab.layout import REGISTRY, NodeSpec
from orchestrator.lab.net import netns_path

LAB_USER = "swarm"
LAB_HOME = Path("/home") / LAB_USER
DEPLOY_ROOT = "/opt/ai-swarm"

UNAME_ARM64 = """#!/bin/sh
# lab: this node emulates an ARM64 machine
out=$(/usr/bin/uname "$@") || exit $?
printf '%s\\n' "$out" | sed -e 's/x86_64/aarch64/g'
"""
ARCH_ARM64 = "#!/bin/sh\necho aarch64\n"


def render_sshd_config(spec: NodeSpec, node_dir: Path) -> str:
    """sshd_config for a node: its address, its host key, key-only login as the lab user."""
    lines = [
        f"ListenAddress {spec.address}",
        "Port 22",
        f"HostKey {node_dir / 'ssh_host_ed25519_key'}",
        "PidFile /run/sshd.pid",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM no",
        "PermitRootLogin no",
        f"AllowUsers {LAB_USER}",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "StrictModes yes",
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "LogLevel INFO",
        "Subsystem sftp internal-sftp",
    ]
    if spec.arch == "arm64":
        lines.append("SetEnv DOCKER_DEFAULT_PLATFORM=linux/arm64")
    return "\n".join(lines) + "\n"


def dockerd_argv(spec: NodeSpec, node_dir: Path) -> list[str]:
    argv = [
        "dockerd", "--data-root", str(node_dir / "docker"), "--exec-root", "/run/docker",
        "--pidfile", str(node_dir / "dockerd.pid"),
        "-H", "unix:///run/docker.sock", "-H", f"unix://{node_dir / 'docker.sock'}",
        "--group", "docker", "--bip", spec.docker_bip,
        "--default-address-pool", spec.docker_pool,
        "--insecure-registry", REGISTRY, "--shutdown-timeout", "2",
        "--cgroup-parent", spec.netns, "--log-level", "warn",
    ]
    runc = shutil.which("runc") or "/usr/sbin/runc"
    if spec.gpus:
        argv += ["--add-runtime", f"nvidia={runc}"]
    return argv


def render_init(spec: NodeSpec, node_dir: Path) -> str:
    """The node's init script (run as root inside its fresh mount + UTS namespaces)."""
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "set -eu",
        f"hostname {q(spec.name)}",
        "umount -l /run/netns 2>/dev/null || true",
        "mount -t tmpfs -o mode=0755,size=64m lab-run /run",
        "mkdir -p /run/sshd /run/lock && chmod 0755 /run/sshd",
        f"mount --bind {q(str(node_dir / 'opt'))} /opt",
        "mkdir -p /etc/docker",  # the engine's ID (key.json) lives there: one per node
        f"mount --bind {q(str(node_dir / 'etc-docker'))} /etc/docker",
        f"mount --bind {q(str(node_dir / 'home'))} {q(str(LAB_HOME))}",
        "mount -t overlay -o " + q(f"lowerdir={node_dir / 'bin'}:/usr/local/bin")
        + " lab-bin /usr/local/bin",
    ]
    if not spec.light:
        log = node_dir / "logs" / "dockerd.log"
        lines.append(f"{shlex.join(dockerd_argv(spec, node_dir))} >>{q(str(log))} 2>&1 &")
    lines += [
        f"echo $$ > {q(str(node_dir / 'init.pid'))}",
        f"exec /usr/sbin/sshd -D -e -f {q(str(node_dir / 'sshd_config'))}",
    ]
    return "\n".join(lines) + "\n"


def node_tools(spec: NodeSpec) -> dict[str, str]:
    """Files for the node's /usr/local/bin overlay: name -> script text."""
    tools: dict[str, str] = {}
    if spec.arch == "arm64":
        tools["uname"] = UNAME_ARM64
        tools["arch"] = ARCH_ARM64
    if spec.gpus:
        tools["nvidia-smi"] = gpu.nvidia_smi_script()
    return tools


def prepare(spec: NodeSpec, node_dir: Path, uid: int, gid: int, pubkey: str) -> None:
    """Create the node's folders and files on the host (fresh engine data each time)."""
    if node_dir.exists():
        shutil.rmtree(node_dir)
    for sub in ("bin", "logs", "opt/swarm-lab", "etc-docker"):
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    _own_dir(node_dir / "opt" / DEPLOY_ROOT.removeprefix("/opt/"), uid, gid, 0o755)
    _prepare_home(node_dir / "home", uid, gid, pubkey)
    for name, text in node_tools(spec).items():
        tool = node_dir / "bin" / name
        tool.write_text(text)
        tool.chmod(0o755)
    if spec.gpus:
        gpu.write_state(gpu_state_path(node_dir), gpu.initial_state(spec))
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"lab-{spec.name}",
              "-f", str(node_dir / "ssh_host_ed25519_key")])
    (node_dir / "sshd_config").write_text(render_sshd_config(spec, node_dir))
    (node_dir / "init.sh").write_text(render_init(spec, node_dir))


def gpu_state_path(node_dir: Path) -> Path:
    return node_dir / "opt" / gpu.STATE_IN_NODE.removeprefix("/opt/")


def _own_dir(path: Path, uid: int, gid: int, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    os.chown(path, uid, gid)


def _prepare_home(home: Path, uid: int, gid: int, pubkey: str) -> None:
    _own_dir(home, uid, gid, 0o755)
    _own_dir(home / ".ssh", uid, gid, 0o700)
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text(pubkey)
    keys.chmod(0o600)
    os.chown(keys, uid, gid)


def start(spec: NodeSpec, node_dir: Path) -> int:
    """Start the node's init (sshd, and dockerd unless light); returns the spawned pid."""
    argv = ["nsenter", f"--net={netns_path(spec)}", "--", "unshare", "--mount", "--uts",
            "--propagation", "private", "--fork", "--", "/bin/sh", str(node_dir / "init.sh")]
    return proc.spawn(argv, node_dir / "logs" / "node.log")


def init_pid(node_dir: Path) -> int | None:
    """Pid of the node's sshd (the init script execs it): nsenter target for the node."""
    return proc.read_pid(node_dir / "init.pid")


def exec_argv(node_dir: Path, argv: list[str]) -> list[str]:
    """argv wrapped to run inside the node's net, mount and UTS namespaces (as root)."""
    pid = init_pid(node_dir)
    if pid is None:
        raise FileNotFoundError(f"{node_dir}: node not running (no init.pid)")
    return ["nsenter", f"--target={pid}", "--net", "--mount", "--uts", "--", *argv]
