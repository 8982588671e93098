"""`swarm render | plan`: what the project renders and whether it fits the hardware (no node is touched)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.common import (
    Context,
    fail,
    handle_errors,
    pass_ctx,
    phase_option,
    phases_of,
    project_options,
)

if TYPE_CHECKING:
    from orchestrator.config.project import Project


@click.command()
@click.option("--out", help="output directory (default compose/)")
@click.option("--check", is_flag=True, help="exit 1 if the rendered tree on disk is stale")
@project_options
@pass_ctx
@handle_errors
def render(ctx: Context, out: str | None, check: bool) -> None:
    """Render one compose project (+ config files) per node; the real tools check them first."""
    from orchestrator.render.fleet import output_dir, render_fleet, stale_files, write_tree
    from orchestrator.render.validate import check_rendered

    project = ctx.project()
    out_dir = output_dir(out, project.root / "compose")
    fleet = render_fleet(project)
    check_rendered(project, fleet)
    if check:
        stale = stale_files(fleet, out_dir)
        if stale:
            for path in stale:
                click.echo(f"stale: {out_dir / path}", err=True)
            fail(f"{len(stale)} rendered file(s) differ from what the roles produce now: run `swarm render`", 1)
        click.echo(f"{out_dir}: up to date ({sum(len(n.files) for n in fleet.nodes.values())} files)")
        return
    written = write_tree(fleet, out_dir)
    for name, nr in fleet.nodes.items():
        click.echo(f"{name}: {len(nr.services)} services, {len(nr.files)} files, {nr.content_hash()[:12]}")
    click.echo(f"{len(written)} file(s) changed under {out_dir}")


@click.command()
@phase_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--place", "wants", type=click.Path(path_type=Path),
              help="propose cards, shares and splits for the models this file lists (docs/plan.md)")
@click.option("--limit", help="with --place: only these nodes or groups (leave out a node that is down)")
@project_options
@pass_ctx
@handle_errors
def plan(ctx: Context, phase: str | None, output: str, wants: Path | None, limit: str | None) -> None:
    """Show what runs where, port use, RAM and the GPU memory budget; exit 2 if it cannot fit."""
    if wants is not None:
        _place(ctx, wants, limit)
        return
    from orchestrator.models import disk
    from orchestrator.render.fleet import render_fleet
    from orchestrator.render.plan import as_dict, describe, make_plan, require_feasible
    from orchestrator.render.services import build_services
    from orchestrator.render.validate import check_rendered

    project = ctx.project()
    result = make_plan(project, phases_of(project, phase))  # an unknown phase is exit 2, before anything else
    margin = project.inventory.spec.models.disk_margin_gb
    disks = disk.plan_disks(project, build_services(project), result.nodes)  # every phase's weights stay
    result.problems.extend(p for d in disks if (p := d.problem(margin)))
    if output == "json":
        data = as_dict(result)
        data["model_store"] = {d.node: disk.as_dict(d, margin) for d in disks}
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        for line in describe(result):
            click.echo(line)
        for d in disks:
            click.echo(f"{d.node} model store:\n{d.describe(margin)}")
        if ctx.verbose:
            for line in role_lines(project):
                click.echo(line)
    require_feasible(result, project.inventory.path)
    check_rendered(project, render_fleet(project))  # what would be deployed must also be valid


def _place(ctx: Context, wants: Path, limit: str | None) -> None:
    from orchestrator.render.placement import fragment, load_wants, place_project, require_placed

    project = ctx.project()
    placement = place_project(project, load_wants(wants), limit)
    cards = {f"{n.name}:{g.index if g.index is not None else i}": g.model
             for n in project.inventory.nodes.values() for i, g in enumerate(n.gpus)}
    for line in fragment(placement, cards):
        click.echo(line)
    require_placed(placement, wants)


def role_lines(project: Project) -> list[str]:
    """Which directory each role came from (`plan -v`): the project's roles/ or swarm's shared ones."""
    from orchestrator.config.project import role_sources

    sources = role_sources(project)
    width = max((len(name) for name, _, _ in sources), default=0)
    search = ", ".join(str(d) for d in project.roles_path)
    return ["", f"roles (first found along {search}):",
            *(f"  {name:<{width}}  {origin:<7}  {where}" for name, where, origin in sources)]


COMMANDS = (render, plan)
