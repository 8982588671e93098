"""`swarm models ls | stage | gc | pin`: the model weights in the fleet (docs/models.md).

`ls` shows each node's store (revisions, sizes, the releases that use them, free space);
`stage` makes every chosen node hold — checked — the weights the project places on it;
`gc` removes revisions no kept release references (`--dry-run` lists them first); `pin`
finds the hub's commit for models not pinned yet and writes it into the catalogue.
Exit 1 when a copy could not be made or checked, 2 for bad input.
"""

from __future__ import annotations

import json
from typing import Any

import click

from orchestrator.cli.common import (
    Context,
    fail,
    handle_errors,
    make_bus,
    pass_ctx,
    phase_option,
    phases_of,
    project_options,
    run_async,
    run_engine,
)

OUTPUT = click.Choice(["text", "json"])


def human(size: float) -> str:
    """Bytes as people read them (models/snapshot.py's rule, without importing it at load)."""
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


GB = 1e9


@click.group()
def models() -> None:
    """Model weights in the fleet: each node's store, staging from peers, the mirror or the hub, and
    collecting what no release uses."""


@models.command("ls")
@click.option("--limit", help="only these nodes or groups (comma separated)")
@click.option("--output", type=OUTPUT, default="text")
@project_options
@pass_ctx
@handle_errors
def ls(ctx: Context, limit: str | None, output: str) -> None:
    """Each node's model store: revisions, sizes, the releases that use them, free disk."""
    from orchestrator.engine.selection import select
    from orchestrator.models.manage import placed, read_models, wanted_by_node
    from orchestrator.transport.fleet import Fleet

    project = ctx.project()
    chosen = select(project, None, limit, render=False)
    nodes = list(chosen.nodes)
    wanted = wanted_by_node(placed(chosen.services, chosen.names))

    async def work() -> Any:
        async with Fleet.for_nodes(project.inventory, nodes, optional=chosen.optional) as fleet:
            await fleet.connect()
            return await read_models(project, fleet)

    found = run_async(work())
    rows = {name: _node_rows(found[name], wanted.get(name, set())) for name in [n.name for n in nodes]}
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for name, row in rows.items():
        if "error" in row:
            click.echo(f"{name}: {row['error']}")
            continue
        free = f"{row['free_bytes'] / GB:.1f} GB free" if row["free_bytes"] is not None else "free space unknown"
        click.echo(f"{name}: {len(row['revisions'])} revision(s), {human(row['held_bytes'])}, {free}")
        for rev in row["revisions"]:
            used = ", ".join(rev["releases"]) or "no release"
            flag = "" if rev["manifest"] else "  [no manifest: not installed by swarm]"
            click.echo(f"  {rev['pin']:<60} {human(rev['bytes']):>10}  used by {used}"
                       f"{'  (placed here now)' if rev['wanted'] else ''}{flag}")
        for path in row["partial"]:
            click.echo(f"  {path}  (a copy left half way: `swarm models gc` removes it)")


def _node_rows(found: Any, wanted: set[Any]) -> dict[str, Any]:
    from orchestrator.errors import SwarmError

    if isinstance(found, SwarmError):
        return {"error": found.message}
    store = found.store
    revisions = [{"pin": pin.key, "bytes": h.snapshot.total_bytes if h.snapshot else 0,
                  "manifest": h.snapshot is not None, "releases": list(found.used_by.get(pin, ())),
                  "wanted": pin in wanted, "path": h.path} for pin, h in sorted(store.held.items())]
    return {"revisions": revisions, "held_bytes": store.held_bytes, "free_bytes": store.free_bytes,
            "partial": list(store.partial)}


@models.command("stage")
@phase_option
@click.option("--limit", help="only these nodes or groups (comma separated)")
@project_options
@pass_ctx
@handle_errors
def stage(ctx: Context, phase: str | None, limit: str | None) -> None:
    """Make every chosen node hold the weights placed on it, checked file by file: from a node that
    has them, else the controller's mirror, else the hub."""
    from orchestrator.engine.selection import select
    from orchestrator.errors import RuntimeFailure
    from orchestrator.models.manage import hub_token, placed
    from orchestrator.models.manage import stage as run_stage
    from orchestrator.transport.fleet import Fleet

    project = ctx.project()
    chosen = select(project, phases_of(project, phase), limit, render=False)
    services = placed(chosen.services, chosen.names, chosen.phase_ids)
    # copy sources: the chosen nodes and every node the inventory does not mark optional
    peers = [n for n in project.inventory.nodes.values() if not n.spec.optional or n.name in chosen.names]
    optional = chosen.optional | {n.name for n in peers if n.spec.optional}
    bus = make_bus(ctx, "text")
    token = hub_token(project)

    async def work(_interrupts: Any) -> Any:
        async with Fleet.for_nodes(project.inventory, peers, optional=optional) as fleet:
            await fleet.connect()
            needed = {s.node for s in services}
            down = sorted(n for n in fleet.unreachable if n in needed and n not in optional)
            if down:
                raise RuntimeFailure(f"cannot reach {', '.join(down)}: {fleet.unreachable[down[0]].message}")
            for node in sorted(n for n in fleet.unreachable if n in needed):   # optional and off
                click.echo(f"{node}: skipped (optional, unreachable: {fleet.unreachable[node].message})")
            reached = [s for s in services if s.node not in fleet.unreachable]
            return await run_stage(project, fleet, bus, reached, token)

    needs, outcome = run_engine(work, bus)
    for node, pin, source, size, seconds in outcome.copied:
        click.echo(f"{node}: {pin.short} {human(size)} from {source} in {seconds:.1f}s "
                   f"({size / max(seconds, 1e-3) / 1e6:.0f} MB/s)")
    held = sum(len(p) for p in needs.by_node.values())
    click.echo(f"{held} placement(s) staged and checked; {human(outcome.bytes_from('hub'))} from the hub")
    if outcome.problems:
        fail("weights not staged:\n  " + "\n  ".join(outcome.problems), 1)


@models.command("gc")
@click.option("--limit", help="only these nodes or groups (comma separated)")
@click.option("--dry-run", is_flag=True, help="list what would be removed, remove nothing")
@project_options
@pass_ctx
@handle_errors
def gc(ctx: Context, limit: str | None, dry_run: bool) -> None:
    """Remove the revisions no release kept on a node references (nor the project places there now),
    and copies left half way."""
    from orchestrator.engine.selection import select
    from orchestrator.errors import SwarmError
    from orchestrator.models.manage import collection, placed, read_models, remove, wanted_by_node
    from orchestrator.transport.fleet import Fleet

    project = ctx.project()
    everywhere = select(project, None, None, render=False)   # what the project places on any node
    chosen = select(project, None, limit, render=False, services=everywhere.services)
    nodes = list(chosen.nodes)
    wanted = wanted_by_node(placed(everywhere.services, everywhere.names))

    async def work() -> Any:
        async with Fleet.for_nodes(project.inventory, nodes, optional=chosen.optional) as fleet:
            await fleet.connect()
            found = await read_models(project, fleet)
            plans = {n: collection(project, m, wanted.get(n, set())) for n, m in found.items()
                     if not isinstance(m, SwarmError)}
            if not dry_run:
                await fleet.map(lambda t: remove(fleet, plans[t.host]), list(plans))
            return found, plans

    found, plans = run_async(work())
    verb = "would remove" if dry_run else "removed"
    for name in (n.name for n in nodes):
        if name not in plans:
            click.echo(f"{name}: {found[name].message if name in found else 'not reached'}")
            continue
        plan = plans[name]
        kept = ", ".join(f"{p.short} ({', '.join(r)})" for p, r in sorted(plan.kept.items())) or "nothing"
        click.echo(f"{name}: {verb} {len(plan.paths)} ({human(plan.freed_bytes)}); kept for releases: {kept}")
        for path in plan.paths:
            click.echo(f"  {path}")


@models.command("pin")
@click.option("--write", is_flag=True, help="write the commits into roles/vllm/models.yml")
@project_options
@pass_ctx
@handle_errors
def pin(ctx: Context, write: bool) -> None:
    """Find on the hub the commit each unpinned model's `main` is at now, and print (or --write)
    the catalogue lines that pin it."""
    from orchestrator.engine.selection import select
    from orchestrator.models.manage import hub_token, placed, resolve, unpinned, write_pins

    project = ctx.project()
    everywhere = select(project, None, None, render=False)
    repos = unpinned(placed(everywhere.services, everywhere.names))
    if not repos:
        click.echo("every served model is pinned to a commit")
        return
    commits = resolve(project, sorted(repos), hub_token(project))
    for repo, commit in commits.items():
        click.echo(f"  {repo}:\n    revision: {commit}    # {', '.join(repos[repo])}")
    if write:
        left = write_pins(project, commits)
        if left:
            fail(f"not in the catalogue, pin them with the service's `revision` var: {', '.join(left)}", 2)
        click.echo("written to roles/vllm/models.yml")
