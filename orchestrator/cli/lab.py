"""`swarm lab up | status | down`: the local test fleet (`orchestrator/lab/`, docs/lab.md)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from orchestrator.cli.common import handle_errors
from orchestrator.lab import lock
from orchestrator.lab.layout import REGISTRY, LabPaths

_ROOT = click.option("--root", type=click.Path(path_type=Path), default=None,
                     help="Lab state directory (default $SWARM_LAB_DIR or ~/.cache/swarm-lab).")


@click.group()
def lab() -> None:
    """Local test fleet: network namespaces with their own sshd, dockerd and registry."""


@lab.command()
@click.option("--nodes", "nodes", default=None,
              help="Node names (oracle,starlord,thanos) or a count (50, with --light).")
@click.option("--light", is_flag=True, help="SSH-only nodes (no dockerd), for scale tests.")
@click.option("--inventory", "source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="Fleet inventory whose shape the lab takes, moved onto lab addresses "
                   "(default: the project's inventory/swarm.yml — `swarm --project DIR` or the "
                   "cwd — else the repository's).")
@_ROOT
@handle_errors
def up(nodes: str | None, light: bool, source: Path | None, root: Path | None) -> None:
    """Bring the lab up (removing any earlier one first)."""
    from orchestrator.lab import api

    started = time.monotonic()
    with lock.hold("swarm lab up", say=click.echo):
        result = api.up(nodes, light, root=root, source_inventory=source or _project_inventory(root) or True,
                        say=click.echo)
    click.echo(f"lab up in {time.monotonic() - started:.1f}s "
               f"({', '.join(f'{k} {v:g}s' for k, v in result.timings.items())})")
    for name, address in result.nodes.items():
        click.echo(f"  {name:<12} {address}")
    first = next(iter(result.nodes))
    click.echo(f"inventory:   {result.inventory_path}")
    if not light:
        click.echo(f"registry:    {REGISTRY}")
    click.echo("try:")
    click.echo(f"  ssh -i {result.key_path} -o UserKnownHostsFile={result.known_hosts_path} "
               f"swarm@{result.nodes[first]} hostname")
    click.echo(f"  swarm -i {result.inventory_path} plan")
    if not light:
        click.echo(f"  swarm -i {result.inventory_path} deploy --phase 1")
    click.echo("  swarm lab down")


def _project_inventory(root: Path | None) -> Path | None:
    """The inventory of the project `swarm` runs in (`-i`, else `<project>/inventory/swarm.yml`),
    unless it is the lab's own inventory."""
    obj = click.get_current_context().find_root().obj
    chosen = getattr(obj, "inventory", None)
    project = getattr(obj, "root", None)
    if chosen is None and isinstance(project, Path):
        chosen = project / "inventory" / "swarm.yml"
    if not isinstance(chosen, Path) or not chosen.is_file():
        return None
    lab_inventory = (LabPaths(root) if root else LabPaths()).inventory
    return None if chosen.resolve() == lab_inventory.resolve() else chosen


@lab.command()
@_ROOT
@handle_errors
def status(root: Path | None) -> None:
    """Show each lab node: namespace, sshd, dockerd."""
    from orchestrator.lab import api

    result, nodes, registry_up = api.status(root)
    click.echo(f"lab at {result.paths.root} (inventory {result.inventory_path})")
    for st in nodes:
        engine = "-" if st.dockerd is None else ("up" if st.dockerd else "DOWN")
        click.echo(f"  {st.name:<12} {st.address:<14} netns {'up' if st.netns else 'DOWN':<4} "
                   f"sshd {'up' if st.sshd else 'DOWN':<4} dockerd {engine}")
    if not result.light:
        click.echo(f"  registry {REGISTRY}: {'up' if registry_up else 'DOWN'}")
    if not all(st.sshd for st in nodes):
        raise SystemExit(1)


@lab.command()
@_ROOT
@handle_errors
def down(root: Path | None) -> None:
    """Stop every lab process and remove namespaces, links and the bridge."""
    from orchestrator.lab import api

    with lock.hold("swarm lab down", say=click.echo):
        api.down(LabPaths(root) if root else None, say=click.echo)
