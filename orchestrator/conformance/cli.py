"""`swarm verify`: the click command (attached to the `swarm` group by orchestrator/cli.py).

The project options, context and error handling are orchestrator.cli.main's, reached through
the late-binding wrappers in orchestrator.preflight.cli: orchestrator.cli.main attaches this
command while it is being imported, so importing it from here would be circular (and
under `python -m orchestrator.cli` the group's Context lives in `__main__`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.preflight.cli import handle_errors, pass_ctx, project_options

if TYPE_CHECKING:
    from orchestrator.cli.main import Context


@click.command("verify")
@click.option("--limit", help="only these nodes or groups (comma separated)")
@click.option("--phase", type=int, help="only the nodes and services of this phase (0: every phase)")
@click.option("--junit", type=click.Path(path_type=Path, dir_okay=False), help="write a JUnit XML report here")
@click.option("-n", "workers", type=click.IntRange(0, 256), default=0, show_default=True,
              help="check nodes in parallel with this many pytest-xdist workers")
@project_options
@pass_ctx
@handle_errors
def verify(ctx: Context, limit: str | None, phase: int | None, junit: Path | None, workers: int) -> None:
    """Check that the fleet is what the inventory, playbook and roles say (testinfra); exit 1 on drift."""
    from orchestrator.conformance.verify import run_verify

    code = run_verify(ctx.root, ctx.inventory, ctx.playbook, limit, phase, junit, workers, ctx.verbose)
    sys.exit(code)
