"""`swarm verify`: conformance of the deployed fleet (testinfra under pytest, `conformance/verify.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.cli.common import Context, handle_errors, pass_ctx, phase_syntax, project_options


@click.command("verify")
@click.option("--limit", help="only these nodes or groups (comma separated)")
@click.option("--phase", metavar="N|N-M|N,M", callback=phase_syntax,
              help="only the nodes and services of these phases (0: every phase)")
@click.option("--junit", type=click.Path(path_type=Path, dir_okay=False), help="write a JUnit XML report here")
@click.option("-n", "workers", type=click.IntRange(0, 256), default=0, show_default=True,
              help="check nodes in parallel with this many pytest-xdist workers")
@project_options
@pass_ctx
@handle_errors
def verify(ctx: Context, limit: str | None, phase: str | None, junit: Path | None, workers: int) -> None:
    """Check that the fleet is what the inventory, playbook and roles say (testinfra); exit 1 on drift."""
    from orchestrator.conformance.verify import run_verify

    code = run_verify(ctx.root, ctx.inventory, ctx.playbook, limit, phase, junit, workers, ctx.verbose)
    sys.exit(code)
