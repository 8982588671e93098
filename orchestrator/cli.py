"""The `swarm` command: the only place that formats errors and picks exit codes."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import InputError, SwarmError
from .project import Project, find_root, load_project
from .secrets import scrub

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("swarm")


@dataclass
class Context:
    root: Path
    inventory: Path | None
    playbook: Path | None
    verbose: int

    def project(self) -> Project:
        return load_project(self.root, self.inventory, self.playbook)


def fail(message: str, code: int) -> None:
    click.echo(scrub(f"error: {message}"), err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn swarm errors into one clean message and the documented exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SwarmError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:  # a bug in swarm: say so, traceback only with -v
            ctx = click.get_current_context(silent=True)
            verbose = bool(ctx and ctx.find_object(Context) and ctx.find_object(Context).verbose)  # type: ignore[union-attr]
            if verbose:
                log.exception("internal error")
            fail(f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)", 1)
        return None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="swarm")
@click.option("-i", "--inventory", type=click.Path(path_type=Path), help="inventory file (default inventory/swarm.yml)")
@click.option("--playbook", type=click.Path(path_type=Path), help="playbook file (default playbooks/ai-swarm.yml)")
@click.option("--project", "root", type=click.Path(path_type=Path), help="project directory (default: found from the cwd)")
@click.option("-v", "--verbose", count=True, help="more detail (-v, -vv, -vvv)")
@click.pass_context
def main(ctx: click.Context, inventory: Path | None, playbook: Path | None, root: Path | None, verbose: int) -> None:
    """swarm — deploy and check a home GPU fleet over SSH."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Context(root=root or find_root(), inventory=inventory, playbook=playbook, verbose=verbose)


pass_ctx = click.make_pass_decorator(Context)


def project_options(fn: F) -> F:
    """-i/--inventory and --playbook accepted after the sub-command too, as Ansible users type them."""

    def set_inventory(ctx: click.Context, _: Any, value: Path | None) -> None:
        if value is not None:
            ctx.ensure_object(Context).inventory = value

    def set_playbook(ctx: click.Context, _: Any, value: Path | None) -> None:
        if value is not None:
            ctx.ensure_object(Context).playbook = value

    fn = click.option("-i", "--inventory", type=click.Path(path_type=Path), expose_value=False,
                      callback=set_inventory, help="inventory file")(fn)
    fn = click.option("--playbook", type=click.Path(path_type=Path), expose_value=False,
                      callback=set_playbook, help="playbook file")(fn)
    return fn


@main.command()
@click.option("--out", type=click.Path(path_type=Path), help="output directory (default compose/)")
@click.option("--check", is_flag=True, help="exit 1 if the rendered tree on disk is stale")
@project_options
@pass_ctx
@handle_errors
def render(ctx: Context, out: Path | None, check: bool) -> None:
    """Render one compose project (+ config files) per node."""
    from .render import render_fleet, stale_files, write_tree

    project = ctx.project()
    out_dir = out or project.root / "compose"
    fleet = render_fleet(project)
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


@main.command()
@click.option("--phase", type=int, help="only this phase's services")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@project_options
@pass_ctx
@handle_errors
def plan(ctx: Context, phase: int | None, output: str) -> None:
    """Show what runs where, port use, RAM and the GPU memory budget; exit 2 if it cannot fit."""
    from .plan import as_dict, describe, make_plan, require_feasible

    project = ctx.project()
    result = make_plan(project, phase)
    if output == "json":
        click.echo(json.dumps(as_dict(result), indent=2, default=str))
    else:
        for line in describe(result):
            click.echo(line)
    require_feasible(result, project.inventory.path)


def _attach_optional_groups() -> None:
    """Sub-command groups that live in their own modules."""
    try:
        from .lab.cli import lab
    except ImportError:  # pragma: no cover - the lab package is optional at import time
        return
    main.add_command(lab)


_attach_optional_groups()


def run() -> None:  # pragma: no cover
    main()


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["main", "InputError"]
