"""What a node runs, read in one batched command and parsed into `NodeFacts`.

One `Script` of read-only commands per node (containers, images, listeners, docker info,
socket mode, the current release and its files, the config store, secret-like files,
nvidia-smi): one round trip over the node's one SSH connection, cached for the session.
Env files are listed with mode and owner only — their content and hashes never leave
the node, and neither does a container's environment: `docker inspect` is asked for the
fields the checks read (INSPECT_FORMAT), nothing else.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator import commands as cmd
from orchestrator.facts.gpu import NVIDIA_SMI_QUERY, GpuReading, parse_nvidia_smi
from orchestrator.render.release import RELEASE_FILE

# A container may vanish between `ps` and `inspect` (auto-removed ones): inspect prints the
# others and exits 1, which is not a failure to read the node.
_CONTAINERS = ('ids=$(docker ps -aq --no-trunc) || exit 1; [ -n "$ids" ] || exit 0; '
               'out=$(docker inspect --format "$1" -- $ids 2>/dev/null); if [ -n "$out" ]; then '
               'printf "%s\\n" "$out"; else docker inspect --format "$1" -- $ids; fi')

# Only what the checks read, one JSON object per container: never the full environment
# (env files put every secret there) — of Config.Env only NVIDIA_VISIBLE_DEVICES leaves the node.
INSPECT_FORMAT = (
    '{"Id":{{json .Id}},"Name":{{json .Name}},"Created":{{json .Created}},"Image":{{json .Image}},'
    '"State":{"Running":{{json .State.Running}},"Restarting":{{json .State.Restarting}},'
    '"Status":{{json .State.Status}},"ExitCode":{{json .State.ExitCode}},"Health":{{json (index .State "Health")}}},'
    '"Config":{"Image":{{json .Config.Image}},"User":{{json .Config.User}},"Labels":{{json .Config.Labels}},'
    '"Env":[{{range .Config.Env}}{{if eq (index (split . "=") 0) "NVIDIA_VISIBLE_DEVICES"}}{{json .}}'
    '{{end}}{{end}}]},'
    '"HostConfig":{"RestartPolicy":{{json .HostConfig.RestartPolicy}},"Memory":{{json .HostConfig.Memory}},'
    '"NanoCpus":{{json .HostConfig.NanoCpus}},"PortBindings":{{json .HostConfig.PortBindings}},'
    '"Runtime":{{json .HostConfig.Runtime}}}}'
)
_IMAGES = ("docker ps -aq --no-trunc | xargs -r docker inspect -f '{{.Image}}' 2>/dev/null | sort -u "
           "| xargs -r docker image inspect -f '{{.Id}} {{json .RepoDigests}}' 2>/dev/null; true")
_FILES = ('[ -d "$1/current/" ] || exit 0; cd "$1/current/" && '
          "find . -type f -printf '%m %u %P\\n'")
_HASHES = ('[ -d "$1/current/" ] || exit 0; cd "$1/current/" && '
           "find . -type f ! -path './env/*' -exec sha256sum -- {} +")
# The model store (`models/`: public weights, tokenizer_config.json among them) is not searched.
_SECRET_FILES = ('[ -d "$1" ] || exit 0; find "$1" -xdev -path "$1/models" -prune -o -type f '
                 '\\( -path "*/env/*" -o -name "*.env" -o -name "*.key" -o -name "*.pem" -o -name "*token*" \\) '
                 "-printf '%m %u %p\\n' 2>/dev/null; true")


@dataclass(frozen=True)
class FileInfo:
    mode: int
    owner: str


@dataclass(frozen=True)
class Listener:
    address: str
    port: int


@dataclass(frozen=True)
class NodeFacts:
    """Everything the node checks need, from one batched read."""

    node: str
    user: str
    containers: tuple[dict[str, Any], ...]
    image_digests: dict[str, tuple[str, ...]]       # image ID -> RepoDigests
    listeners: tuple[Listener, ...]
    runtimes: tuple[str, ...]
    socket_stat: str | None                          # "660 root docker"
    current_target: str | None
    release: dict[str, Any] | None
    files: dict[str, FileInfo]                       # relative to current/
    hashes: dict[str, str]                           # relative to current/, env files excluded
    store_hashes: dict[str, str]                     # relative to deploy_root
    secret_files: dict[str, FileInfo]                # absolute paths
    gpus: tuple[GpuReading, ...] = ()
    errors: dict[str, str] = field(default_factory=dict)   # step -> what failed


def _sh(script: str, *args: str) -> cmd.Command:
    """A fixed read-only script; data only as positional parameters."""
    return cmd.Command(("sh", "-c", script, "sh", *args), mutates=False)


STEPS = ("user", "containers", "images", "listeners", "runtimes", "socket", "current",
         "release", "files", "hashes", "store", "secret_files", "gpus")


def facts_script(deploy_root: str, store_paths: Sequence[str], gpu: bool) -> cmd.Script:
    """The one command that reads a node; its steps are in STEPS order."""
    steps = [
        cmd.read_only("id", "-un"),
        _sh(_CONTAINERS, INSPECT_FORMAT),
        _sh(_IMAGES),
        cmd.listening_ports(),
        cmd.read_only("docker", "info", "--format", "{{json .Runtimes}}"),
        _sh('stat -L -c "%a %U %G" -- "$1" 2>/dev/null || true', "/var/run/docker.sock"),
        cmd.read_link(f"{deploy_root}/current"),
        cmd.read_file(f"{deploy_root}/current/{RELEASE_FILE}"),
        _sh(_FILES, deploy_root),
        _sh(_HASHES, deploy_root),
        cmd.sha256_files([posixpath.join(deploy_root, p) for p in store_paths]) if store_paths
        else cmd.read_only("true"),
        _sh(_SECRET_FILES, deploy_root),
        cmd.Command(NVIDIA_SMI_QUERY, mutates=False) if gpu else cmd.read_only("true"),
    ]
    return cmd.Script.of(*steps, stop_on_error=False)


def parse_facts(node: str, deploy_root: str, steps: Sequence[cmd.StepResult], gpu: bool) -> NodeFacts:
    out = dict(zip(STEPS, steps, strict=True))
    errors = {name: (r.stderr.strip() or f"exit {r.exit_status}")[:300]
              for name, r in out.items() if not r.ok}
    text = {name: r.stdout if r.ok else "" for name, r in out.items()}
    release_text = cmd.parse_read_file(text["release"]) if text["release"] else None
    return NodeFacts(
        node=node,
        user=text["user"].strip(),
        containers=tuple(parse_json_list(text["containers"])),
        image_digests=parse_image_digests(text["images"]),
        listeners=parse_listeners(text["listeners"]),
        runtimes=tuple(sorted(parse_json_dict(text["runtimes"]))),
        socket_stat=text["socket"].strip() or None,
        current_target=text["current"].strip() or None,
        release=parse_release(release_text),
        files=parse_file_list(text["files"]),
        hashes={_rel(p): h for p, h in cmd.parse_sha256sum(text["hashes"]).items()},
        store_hashes={posixpath.relpath(p, deploy_root): h
                      for p, h in cmd.parse_sha256sum(text["store"]).items()},
        secret_files=parse_file_list(text["secret_files"]),
        gpus=parse_nvidia_smi(text["gpus"]) if gpu and text["gpus"].strip() else (),
        errors=errors,
    )


def _rel(path: str) -> str:
    return path.removeprefix("./")


def parse_json_list(text: str) -> list[dict[str, Any]]:
    """A JSON array, or one JSON object per line (`docker inspect --format`); junk is skipped."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return []
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def parse_json_dict(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text.strip() or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def parse_release(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"corrupt": True}
    return data if isinstance(data, dict) else {"corrupt": True}


def parse_image_digests(text: str) -> dict[str, tuple[str, ...]]:
    """`<image id> ["repo@sha256:..."]` lines -> {image id: repo digests}."""
    out: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        image_id, _, digests = line.strip().partition(" ")
        if not image_id:
            continue
        try:
            found = json.loads(digests or "[]") or []
        except json.JSONDecodeError:
            found = []
        out[image_id] = tuple(str(d) for d in found)
    return out


def parse_listeners(text: str) -> tuple[Listener, ...]:
    """`ss -ltnH` lines -> (address, port) of each listening TCP socket."""
    found: list[Listener] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        if port.isdigit():
            found.append(Listener(_bare_address(address), int(port)))
    return tuple(dict.fromkeys(found))


def _bare_address(address: str) -> str:
    """`[::]` -> `::`, `0.0.0.0%lo` -> `0.0.0.0`, `[::ffff:1.2.3.4]` -> `1.2.3.4`."""
    address = address.strip("[]").partition("%")[0]
    return address.removeprefix("::ffff:") if "." in address else address


def parse_file_list(text: str) -> dict[str, FileInfo]:
    """`<octal mode> <owner> <path>` lines -> {path: FileInfo}."""
    files: dict[str, FileInfo] = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0].isdigit():
            files[parts[2]] = FileInfo(int(parts[0], 8), parts[1])
    return files
