"""`swarm init DIR [--example NAME] [--node NAME@ADDRESS[/ARCH] ...] [--probe]`: a new project.

The logic is in `orchestrator.project_init`; this module asks for the machines when none are
given on a terminal, runs the probe over SSH when asked, and reports what was written.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.common import handle_errors, run_async

if TYPE_CHECKING:
    from orchestrator.project_init import InitRequest, Machine


@click.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--example", metavar="NAME",
              help="start from an example project: vllm-server, litellm-saas, litellm-tailnet-ollama, gateway")
@click.option("--node", "nodes", multiple=True, metavar="NAME@ADDRESS[/ARCH]",
              help="a machine (repeat per machine), e.g. gpu1@100.64.0.2/amd64; asked for when omitted")
@click.option("--gpu", "gpus", multiple=True, metavar="NAME=MODEL:VRAM_MIB",
              help="a GPU of a machine, when not probed, e.g. gpu1='NVIDIA GeForce RTX 4090:24564'")
@click.option("--ram", "rams", multiple=True, metavar="NAME=GB",
              help="a machine's RAM in GB, when not probed (default 8), e.g. gpu1=64")
@click.option("--probe", is_flag=True,
              help="read each machine's arch, cores, RAM and GPUs over SSH (one read-only command each)")
@click.option("--fleet", metavar="NAME", help="the fleet's name (default: the directory's)")
@click.option("--ssh-user", default="swarm", show_default=True)
@click.option("--ssh-key", default="~/.ssh/swarm_ed25519", show_default=True)
@click.option("--known-hosts", default="~/.ssh/known_hosts", show_default=True)
@click.option("--force", is_flag=True, help="write into a directory that is not empty")
@click.option("--yes", is_flag=True,
              help="with --probe: record host keys not in known_hosts without asking (fingerprints are printed)")
@handle_errors
def init(directory: Path, example: str | None, nodes: tuple[str, ...], gpus: tuple[str, ...],
         rams: tuple[str, ...], probe: bool, fleet: str | None, ssh_user: str, ssh_key: str, known_hosts: str,
         force: bool, yes: bool) -> None:
    """Write a new project in DIRECTORY: an inventory of your machines, a playbook, a README."""
    from orchestrator import project_init as pi

    machines = tuple(pi.parse_node_option(n) for n in nodes) or _ask_machines()
    machines = pi.with_gpus(machines, [pi.parse_gpu_option(g) for g in gpus])
    machines = pi.with_ram(machines, [pi.parse_ram_option(r) for r in rams])
    request = pi.InitRequest(directory, machines, example, fleet, ssh_user, ssh_key, known_hosts, force)
    if probe:
        _trust_new_hosts(request, yes)
        machines = _probe(request)
        request = pi.InitRequest(directory, machines, example, fleet, ssh_user, ssh_key, known_hosts, force)
    written = pi.init_project(request)
    for path in written.files:
        click.echo(f"wrote {path}")
    for node, target in written.mapping.items():
        click.echo(f"  example node {node} -> {target}")
    click.echo(f"next: cd {directory} && swarm plan")


def _ask_machines() -> tuple[Machine, ...]:
    from orchestrator import project_init as pi

    if not sys.stdin.isatty():
        raise click.UsageError("give the machines with --node NAME@ADDRESS[/ARCH] (no terminal to ask on)")
    machines = []
    click.echo("Your machines, one at a time (an empty name ends the list).")
    while True:
        name = click.prompt("  name", default="", show_default=False).strip()
        if not name:
            break
        address = click.prompt("  address (tailnet IP or host name)").strip()
        arch = click.prompt("  arch", default="amd64", type=click.Choice(["amd64", "arm64"]))
        machines.append(pi.machine(name, address, arch))
    return tuple(machines)


def _trust_new_hosts(request: InitRequest, yes: bool) -> None:
    """`swarm trust` for machines of a project not written yet: show each unknown host key's
    fingerprint and record it once confirmed, so the probe's verified connection can follow."""
    from orchestrator import project_init as pi
    from orchestrator.addresses import host_port
    from orchestrator.errors import InputError
    from orchestrator.transport.ssh import fetch_host_key, record_host_key

    known = pi.known_hosts_path(request)
    for machine in pi.untrusted(request):
        key = run_async(fetch_host_key(machine.address, pi.SSH_PORT))
        click.echo(f"{machine.name} ({host_port(machine.address, pi.SSH_PORT)}) {key.algorithm} {key.fingerprint}")
        if not yes and not click.confirm(f"record this key for {machine.name} in {known}?", default=False):
            raise InputError(f"--probe: {machine.name}'s host key is not recorded, so it is not probed",
                             hint="compare the fingerprint with `ssh-keygen -lf` of the machine's host key "
                                  "and answer y; or leave out --probe (give --gpu and --ram) and run "
                                  f"`swarm trust all` in {request.directory} afterwards")
        record_host_key(key, known)
        click.echo(f"recorded in {known}")


def _probe(request: InitRequest) -> tuple[Machine, ...]:
    import tempfile

    from orchestrator import project_init as pi

    with tempfile.TemporaryDirectory(prefix="swarm-init-probe-") as scratch:
        path = Path(scratch) / "inventory.yml"
        book = pi.backbone_playbook("probe", request.machines[0].name)
        # known_hosts as the written inventory will resolve it, not from this scratch directory
        probing = replace(request, known_hosts=str(pi.known_hosts_path(request)))
        path.write_text(pi._inventory_text(probing, None, pi.inventory_data(probing, "probe", book, None, {})))
        return pi.probe(path, request.machines, say=click.echo)


COMMANDS = (init,)
