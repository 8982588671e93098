"""`swarm init`: a new project for the operator's own machines, ready for `swarm plan`.

A project is a directory with `inventory/swarm.yml` (the machines), `playbooks/<name>.yml`
(what runs where) and `roles/` (only the roles it adds: the shared ones come from swarm's
roles search path, `config/project.py`). `swarm init DIR` writes one:

- the machines come from `--node NAME@ADDRESS[/ARCH]` options or are asked for; with
  `--probe` each is asked over SSH, in one read-only command (`commands.system.machine_facts`),
  for its architecture, cores, RAM and GPUs (model and VRAM as nvidia-smi reports them);
- the playbook is an example's (`--example vllm-server`, ...), its hosts mapped onto the
  machines: the example's GPU nodes onto machines with GPUs, in order, the others onto the
  remaining machines (the first machine when there are fewer). Per-instance settings the
  example keeps in its inventory (which model a vLLM serves, ...) move with their node, and
  the roles the example adds are copied in. Without an example, the playbook brings up the
  backbone only: directories, the docker network, Vault and Consul on the first machine;
- an example's client API keys are never copied: each client gets a fresh key, the
  inventory its hash and `client-keys.txt` (0600) the key to hand out;
- a README says what was written and the next commands, and `secrets.example.env` names
  every secret the playbook declares, to fill in and push.

Everything is written only after the new project loads and its plan is feasible, so a
project that `swarm init` leaves behind passes `swarm plan` at once.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from orchestrator.addresses import host_port
from orchestrator.commands.system import machine_facts
from orchestrator.config.inventory import load_inventory
from orchestrator.config.models import is_host, is_name
from orchestrator.config.project import load_project
from orchestrator.errors import InputError
from orchestrator.facts.machine import parse_machine_facts
from orchestrator.render.fleet import render_fleet
from orchestrator.render.plan import make_plan
from orchestrator.render.validate import check_rendered

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
_ARCHES = {"amd64": "amd64", "x86_64": "amd64", "arm64": "arm64", "aarch64": "arm64"}
Raw = dict[str, Any]


@dataclass(frozen=True)
class Machine:
    """One of the operator's machines, as given (and, with --probe, as read over SSH)."""

    name: str
    address: str
    arch: str = "amd64"
    ram_gb: float | None = None
    cpus: int | None = None
    gpus: tuple[tuple[int, str, int], ...] = ()    # (index, model, vram_mib)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)


@dataclass(frozen=True)
class InitRequest:
    directory: Path
    machines: tuple[Machine, ...]
    example: str | None = None
    fleet: str | None = None
    ssh_user: str = "swarm"
    ssh_key: str = "~/.ssh/swarm_ed25519"
    known_hosts: str = "~/.ssh/known_hosts"
    force: bool = False


@dataclass
class Written:
    directory: Path
    files: list[Path] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)   # example node -> machine


# ---------------------------------------------------------------- machines


def parse_node_option(text: str) -> Machine:
    """`NAME@ADDRESS[/ARCH]`, e.g. `gpu1@100.64.0.2/amd64`."""
    name, at, rest = text.partition("@")
    address, _, arch = rest.partition("/")
    name, address, arch = name.strip(), address.strip(), (arch.strip().lower() or "amd64")
    if not at or not name or not address:
        raise InputError(f"--node {text!r}: expected NAME@ADDRESS[/ARCH], e.g. gpu1@100.64.0.2/amd64")
    return machine(name, address, arch, f"--node {text!r}")


def machine(name: str, address: str, arch: str = "amd64", where: str = "machine") -> Machine:
    if not is_name(name) or len(name) > 63:
        raise InputError(f"{where}: {name!r} is not a node name (letters, digits, '-', '_', "
                         "starting with a letter)")
    if not is_host(address):
        raise InputError(f"{where}: {address!r} is not a host name or IP address")
    if arch.lower() not in _ARCHES:
        raise InputError(f"{where}: architecture {arch!r} is not one of amd64, arm64")
    return Machine(name, address, _ARCHES[arch.lower()])


def parse_gpu_option(text: str) -> tuple[str, str, int]:
    """`NAME=MODEL:VRAM_MIB` (a GPU of machine NAME, when it is not probed)."""
    name, eq, rest = text.partition("=")
    model, colon, vram = rest.rpartition(":")
    if not eq or not colon or not model.strip() or not vram.strip().isdigit():
        raise InputError(f"--gpu {text!r}: expected NAME=MODEL:VRAM_MIB, e.g. "
                         "gpu1='NVIDIA GeForce RTX 4090:24564'")
    return name.strip(), model.strip(), int(vram)


def parse_ram_option(text: str) -> tuple[str, float]:
    """`NAME=GB` (a machine's RAM, when it is not probed)."""
    name, eq, value = text.partition("=")
    try:
        gb = float(value)
    except ValueError:
        gb = 0.0
    if not eq or not name.strip() or not 0 < gb <= 1_000_000:
        raise InputError(f"--ram {text!r}: expected NAME=GB, e.g. gpu1=64")
    return name.strip(), gb


def with_ram(machines: Sequence[Machine], rams: Sequence[tuple[str, float]]) -> tuple[Machine, ...]:
    by_name = {m.name: m for m in machines}
    for name, gb in rams:
        if name not in by_name:
            raise InputError(f"--ram: no machine named {name!r} (machines: {', '.join(by_name)})")
        by_name[name] = replace(by_name[name], ram_gb=gb)
    return tuple(by_name[m.name] for m in machines)


def with_gpus(machines: Sequence[Machine], gpus: Sequence[tuple[str, str, int]]) -> tuple[Machine, ...]:
    by_name = {m.name: m for m in machines}
    for name, model, vram in gpus:
        if name not in by_name:
            raise InputError(f"--gpu: no machine named {name!r} (machines: {', '.join(by_name)})")
        found = by_name[name]
        by_name[name] = replace(found, gpus=(*found.gpus, (len(found.gpus), model, vram)))
    return tuple(by_name[m.name] for m in machines)


def check_machines(machines: Sequence[Machine]) -> None:
    if not machines:
        raise InputError("no machines: give --node NAME@ADDRESS[/ARCH] once per machine")
    names = [m.name for m in machines]
    if len(set(names)) != len(names):
        raise InputError(f"two machines share a name: {', '.join(sorted(names))}")


# ---------------------------------------------------------------- probing over SSH

SSH_PORT = 22  # the port the written inventory gives every machine


def known_hosts_path(request: InitRequest) -> Path:
    """The known_hosts file the written inventory will name, as that inventory resolves it
    (relative paths from its own directory, ~ expanded)."""
    path = Path(request.known_hosts).expanduser()
    return path if path.is_absolute() else request.directory / "inventory" / path


def untrusted(request: InitRequest) -> list[Machine]:
    """Machines whose host key known_hosts does not hold yet. `--probe` records them first (the
    fingerprint shown and confirmed, as `swarm trust` does): probing needs a verified key, and
    `swarm trust` needs the project that init has not written yet."""
    # asyncssh, ~110 ms to import: only for --probe
    from orchestrator.transport.ssh import known_keys

    path = known_hosts_path(request)
    return [m for m in request.machines if not known_keys(path, m.address, SSH_PORT)]



def probe(inventory_path: Path, machines: Sequence[Machine],
          say: Callable[[str], None] = lambda _m: None) -> tuple[Machine, ...]:
    """Each machine's arch, cores, RAM and GPUs, read over SSH (one read-only command each)."""
    inventory = load_inventory(inventory_path)
    facts = asyncio.run(_probe_all(inventory, [m.name for m in machines]))
    out = []
    for m in machines:
        result = facts[m.name]
        if isinstance(result, BaseException):
            raise InputError(f"--probe: {m.name} ({m.address}): {result}",
                             hint="check the address, --ssh-user and --ssh-key (the key must be in the "
                                  "user's authorized_keys on the machine)")
        arch = _ARCHES.get(result.arch, m.arch)
        say(f"{m.name}: {arch}, {result.cpus} cores, {result.ram_gb:g} GB RAM, "
            + (", ".join(f"{name} {vram} MiB" for _, name, vram in result.gpus) or "no GPU"))
        out.append(replace(m, arch=arch, ram_gb=result.ram_gb or None, cpus=result.cpus or None,
                           gpus=result.gpus or m.gpus))
    return tuple(out)


async def _probe_all(inventory: Any, names: list[str]) -> dict[str, Any]:
    # SSH (asyncssh, ~110 ms to import: python -X importtime, 2026-12-06) only for --probe
    from orchestrator.transport.fleet import Fleet

    nodes = [inventory.node(n) for n in names]
    async with Fleet.for_nodes(inventory, nodes) as fleet:
        connected = await fleet.connect()
        out: dict[str, Any] = dict(connected.failed)
        for name in fleet.reachable:
            try:
                result = await fleet[name].run(machine_facts(), check=True, timeout=60)
                out[name] = parse_machine_facts(result.stdout)
            except Exception as exc:  # noqa: BLE001 - per-host result, reported by name
                out[name] = exc
        return out


# ---------------------------------------------------------------- the example


def example_names() -> list[str]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(p.name for p in EXAMPLES.iterdir() if (p / "inventory" / "swarm.yml").is_file())


@dataclass(frozen=True)
class Example:
    name: str
    inventory: Raw
    playbook: Raw
    playbook_name: str
    roles_dir: Path


def load_example(name: str) -> Example:
    root = EXAMPLES / name
    if name not in example_names():
        raise InputError(f"--example {name!r}: no such example (examples: {', '.join(example_names())})")
    books = sorted((root / "playbooks").glob("*.yml"))
    inventory = yaml.safe_load((root / "inventory" / "swarm.yml").read_text())
    playbook = yaml.safe_load(books[0].read_text())
    return Example(name, inventory, playbook, books[0].name, root / "roles")


def map_nodes(example: Example, machines: Sequence[Machine]) -> dict[str, str]:
    """Example node -> machine: GPU nodes onto machines with GPUs, in order; the others onto
    the machines left (or the first machine, when none is left)."""
    nodes: Raw = example.inventory.get("nodes") or {}
    gpu_nodes = [n for n, body in nodes.items() if (body or {}).get("gpus")]
    cpu_nodes = [n for n in nodes if n not in gpu_nodes]
    gpu_machines = [m.name for m in machines if m.has_gpu]
    if len(gpu_machines) < len(gpu_nodes):
        raise InputError(
            f"--example {example.name}: it needs {len(gpu_nodes)} machine(s) with a GPU "
            f"({', '.join(gpu_nodes)}), and {len(gpu_machines)} of the machines given have one",
            hint="read the GPUs with --probe, or give them: --gpu NAME='MODEL:VRAM_MIB'")
    mapping = dict(zip(gpu_nodes, gpu_machines, strict=False))
    left = [m.name for m in machines if m.name not in mapping.values()] or [machines[0].name]
    for i, node in enumerate(cpu_nodes):
        mapping[node] = left[i] if i < len(left) else machines[0].name
    return mapping


def _rename_hosts(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, list):
        renamed = [mapping.get(v, v) if isinstance(v, str) else v for v in value]
        return list(dict.fromkeys(renamed))
    return mapping.get(value, value) if isinstance(value, str) else value


def mapped_playbook(example: Example, mapping: dict[str, str]) -> Raw:
    book = copy.deepcopy(example.playbook)
    for phase in book.get("phases") or []:
        if "hosts" in phase and phase["hosts"] != "all":
            phase["hosts"] = _rename_hosts(phase["hosts"], mapping)
        for svc in phase.get("services") or []:
            svc["host"] = _rename_hosts(svc.get("host"), mapping)
    return book


def backbone_playbook(name: str, first: str) -> Raw:
    return {
        "name": name,
        "description": f"{name}: the backbone (directories, docker network, Vault + Consul on {first})",
        "secrets": {},
        "phases": [
            {"id": 0, "name": "validation", "kind": "preflight"},
            {"id": 1, "name": "infrastructure", "kind": "infrastructure", "hosts": "all",
             "gate": {"healthy_deadline": "2m", "min_healthy_time": "5s"},
             "services": [{"name": "vault", "role": "vault", "host": first},
                          {"name": "consul", "role": "consul", "host": first}]},
        ],
    }


# ---------------------------------------------------------------- the inventory


def _server_host(book: Raw, role: str, default: str) -> str:
    for phase in book.get("phases") or []:
        for svc in phase.get("services") or []:
            if svc.get("role") == role:
                return str(svc.get("host"))
    return default


def inventory_data(request: InitRequest, fleet: str, book: Raw,
                   example: Example | None, mapping: dict[str, str]) -> Raw:
    machines = {m.name: m for m in request.machines}
    source = (example.inventory if example else {}) or {}
    vault_host = machines[_server_host(book, "vault", request.machines[0].name)].address
    consul_host = machines[_server_host(book, "consul", request.machines[0].name)].address
    data: Raw = {
        "fleet": fleet,
        "ssh": {"user": request.ssh_user, "port": SSH_PORT, "key": request.ssh_key,
                "known_hosts": request.known_hosts, "connect_timeout": 10, "command_timeout": 300},
        "deploy_root": "/opt/ai-swarm",
        "vault": {"addr": f"http://{host_port(vault_host, 8200)}", "mount": "secret", "path": fleet},
        "consul": {"addr": f"http://{host_port(consul_host, 8500)}"},
        "network": dict(source.get("network") or {"name": "aiswarm", "subnet": "172.20.0.0/16"}),
        "vars": copy.deepcopy(source.get("vars") or {"tailnet_cidr": "100.64.0.0/10"}),
    }
    groups = {g: {**body, "hosts": _rename_hosts((body or {}).get("hosts") or [], mapping)}
              for g, body in (source.get("groups") or {}).items()}
    if groups:
        data["groups"] = groups
    data["nodes"] = {m.name: _node(m, source, mapping) for m in request.machines}
    return data


def _node(m: Machine, source: Raw, mapping: dict[str, str]) -> Raw:
    node: Raw = {"address": m.address, "arch": m.arch}
    if m.ram_gb:
        node["ram_gb"] = m.ram_gb
    if m.cpus:
        node["cpus"] = m.cpus
    if m.gpus:
        node["gpus"] = [{"model": model, "vram_mib": vram, **({"index": i} if i else {})}
                        for i, model, vram in m.gpus]
    services: Raw = {}
    for example_node, body in (source.get("nodes") or {}).items():
        if mapping.get(example_node) == m.name:
            services.update(copy.deepcopy((body or {}).get("services") or {}))
    if services:
        node["services"] = services
    return node


# ---------------------------------------------------------------- writing


# ---------------------------------------------------------------- client keys

CLIENT_KEYS_FILE = "client-keys.txt"


def fresh_client_keys(inventory: Raw) -> dict[str, str]:
    """New API keys for every client an example's `client_keys` names (client -> sha256 hex).

    An example's hashes belong to keys published with it (its lab-secrets.env): a project
    made from it must never accept them. Each client gets a new random key; the inventory
    keeps only its SHA-256, the key itself goes to CLIENT_KEYS_FILE (0600) for the operator
    to hand out."""
    keys: dict[str, str] = {}
    for table in _var_tables(inventory):
        given = table.get("client_keys")
        if isinstance(given, dict) and given:
            fresh = {str(name): keys.setdefault(str(name), f"sk-{name}-{secrets.token_urlsafe(24)}")
                     for name in given}
            table["client_keys"] = {name: hashlib.sha256(key.encode()).hexdigest() for name, key in fresh.items()}
    return keys


def _var_tables(inventory: Raw) -> list[Raw]:
    """Every mapping of settings in an inventory: fleet, group and node vars, node services."""
    tables: list[Raw] = [inventory.get("vars") or {}]
    tables += [(g or {}).get("vars") or {} for g in (inventory.get("groups") or {}).values()]
    for node in (inventory.get("nodes") or {}).values():
        tables.append((node or {}).get("vars") or {})
        tables += [s for s in ((node or {}).get("services") or {}).values() if isinstance(s, dict)]
    return [t for t in tables if isinstance(t, dict)]


def _write_client_keys(directory: Path, keys: dict[str, str]) -> list[Path]:
    path = directory / CLIENT_KEYS_FILE
    lines = ["# API keys of this fleet's clients, made by `swarm init` (the inventory holds only their",
             "# SHA-256). Hand each client its key, then delete this file; never commit it.",
             *(f"{name}={key}" for name, key in sorted(keys.items()))]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, 0o600)
        fh.write("\n".join(lines) + "\n")
    ignore = directory / ".gitignore"
    if CLIENT_KEYS_FILE not in (ignore.read_text() if ignore.is_file() else ""):
        with ignore.open("a", encoding="utf-8") as fh:
            fh.write(f"{CLIENT_KEYS_FILE}\n")
    return [path, ignore]


def check_directory(directory: Path, force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InputError(f"{directory} is not empty", hint="choose a new directory, or --force to write into it")


def fleet_name(request: InitRequest) -> str:
    name = request.fleet or re.sub(r"[^A-Za-z0-9_-]+", "-", request.directory.resolve().name).strip("-_")
    if not name or not is_name(name):
        name = "my-fleet"
    return name


def init_project(request: InitRequest) -> Written:
    """Write the project; it is checked (load + plan) in a scratch copy before anything lands."""
    check_machines(request.machines)
    check_directory(request.directory, request.force)
    fleet = fleet_name(request)
    example = load_example(request.example) if request.example else None
    mapping = map_nodes(example, request.machines) if example else {}
    book = (mapped_playbook(example, mapping) if example
            else backbone_playbook(fleet, request.machines[0].name))
    playbook_file = example.playbook_name if example else f"{fleet}.yml"
    inventory = inventory_data(request, fleet, book, example, mapping)
    client_keys = fresh_client_keys(inventory)
    files = {
        "inventory/swarm.yml": _inventory_text(request, example, inventory),
        f"playbooks/{playbook_file}": _playbook_text(example, book),
        "README.md": readme_text(request, fleet, example, mapping, playbook_file, book),
        "secrets.example.env": secrets_text(book),
    }
    roles = _example_roles(example)
    _check(files, roles)
    written = _write(request.directory, files, roles, mapping)
    if client_keys:
        written.files += _write_client_keys(request.directory, client_keys)
    return written


def _example_roles(example: Example | None) -> list[Path]:
    if example is None or not example.roles_dir.is_dir():
        return []
    return sorted(p for p in example.roles_dir.iterdir() if (p / "role.yml").is_file())


def _materialise(root: Path, files: dict[str, str], roles: list[Path]) -> list[Path]:
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    (root / "roles").mkdir(exist_ok=True)
    for role in roles:
        shutil.copytree(role, root / "roles" / role.name, dirs_exist_ok=True)
        written.append(root / "roles" / role.name)
    return written


def _check(files: dict[str, str], roles: list[Path]) -> None:
    """Load the project and make its plan in a scratch directory: bad input never lands."""
    with tempfile.TemporaryDirectory(prefix="swarm-init-") as scratch:
        root = Path(scratch)
        _materialise(root, files, roles)
        project = load_project(root)
        problems = make_plan(project).problems
        if problems:
            raise InputError("the new project's plan cannot work:\n  - " + "\n  - ".join(problems),
                             hint="give machines with more RAM or GPU memory, or another example")
        check_rendered(project, render_fleet(project))


def _write(directory: Path, files: dict[str, str], roles: list[Path], mapping: dict[str, str]) -> Written:
    directory.mkdir(parents=True, exist_ok=True)
    return Written(directory, _materialise(directory, files, roles), mapping)


def _inventory_text(request: InitRequest, example: Example | None, data: Raw) -> str:
    origin = f"from the {example.name} example" if example else "with the backbone only"
    head = (f"# Written by `swarm init` {origin}: the machines of this fleet, facts only.\n"
            "# What runs where is in playbooks/. Check each address, then `swarm trust HOST`.\n")
    return head + yaml.safe_dump(data, sort_keys=False)


def _playbook_text(example: Example | None, book: Raw) -> str:
    origin = (f"# From examples/{example.name} (its hosts mapped onto this fleet's machines).\n"
              if example else "# The backbone: add phases with your services (see the examples).\n")
    return origin + yaml.safe_dump(book, sort_keys=False)


def secrets_text(book: Raw) -> str:
    lines = ["# The secrets this project's playbook declares. Copy to a file outside git, fill in,",
             "# then: swarm vault init --key-file vault-keys.json; swarm secrets push --env-file FILE"]
    for name, spec in (book.get("secrets") or {}).items():
        description = (spec or {}).get("description") or ""
        lines.append(f"# {description}" if description else f"# {name}")
        lines.append(f"{name.upper()}=")
    return "\n".join(lines) + "\n"


def readme_text(request: InitRequest, fleet: str, example: Example | None,
                mapping: dict[str, str], playbook_file: str, book: Raw) -> str:
    rows = "\n".join(f"| {m.name} | {m.address} | {m.arch} | "
                     f"{', '.join(f'{g[1]} ({g[2]} MiB)' for g in m.gpus) or '-'} |"
                     for m in request.machines)
    where = "\n".join(f"- {svc['name']} ({svc['role']}) on {svc['host']}"
                      for phase in book.get("phases") or [] for svc in phase.get("services") or [])
    origin = (f"from the `{example.name}` example (`examples/{example.name}/README.md` in the swarm "
              "repository explains the stack); its nodes became: "
              + ", ".join(f"{k} -> {v}" for k, v in mapping.items())) if example else (
        "with the backbone only: add your services to the playbook (the examples in the swarm "
        "repository show how)")
    return f"""# {fleet}

A swarm project written by `swarm init`, {origin}.

| machine | address | arch | GPUs |
|---|---|---|---|
{rows}

What runs where (`playbooks/{playbook_file}`):

{where}

Roles: the shared ones of swarm (vllm, litellm, haproxy, ...) are found through swarm's roles
search path; `roles/` holds only what this project adds.

## Next

```sh
cd {request.directory}
swarm plan                         # what runs where, RAM, and whether each model fits its GPU
swarm trust all                    # each machine's SSH host key: check it, record it (--probe did)
swarm preflight --phase 1          # SSH, docker, disk, arch, ports
swarm deploy --phase 1             # network, directories, Vault + Consul
swarm vault init --key-file vault-keys.json
swarm secrets push --env-file <your copy of secrets.example.env>
swarm deploy                       # every phase in order, gated, rolled back on failure
swarm verify                       # the deployed fleet against what render produces
```

Rehearse it first on a local lab of the same shape: `swarm lab up` (from this directory).
"""
