"""The `swarm` command: the group, its global options, and where each sub-command lives.

`common` holds what every command shares (context, errors and exit codes, the event bus,
running the engine under signal handling); `deploy`, `project` and `secrets` hold the
commands, with `preflight`, `verify` and `lab` in their own packages. Every command module
imports only click and `common` at load time, so `swarm --help` stays cheap.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from orchestrator import __version__
from orchestrator.cli import backup, deploy, project, secrets
from orchestrator.cli.common import Context


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="swarm")
@click.option("-i", "--inventory", type=click.Path(path_type=Path), help="inventory file (default inventory/swarm.yml)")
@click.option("--playbook", type=click.Path(path_type=Path), help="playbook file (default playbooks/ai-swarm.yml)")
@click.option("--project", "root", type=click.Path(path_type=Path), help="project directory (default: found from the cwd)")
@click.option("-v", "--verbose", count=True, help="more detail (-v, -vv, -vvv)")
@click.pass_context
def main(ctx: click.Context, inventory: Path | None, playbook: Path | None, root: Path | None, verbose: int) -> None:
    """swarm — deploy and check a home GPU fleet over SSH."""
    from orchestrator.paths import find_root

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Context(root=root or find_root(), inventory=inventory, playbook=playbook, verbose=verbose)


def _attach() -> None:
    from orchestrator.cli import init
    from orchestrator.conformance.cli import verify
    from orchestrator.lab.cli import lab
    from orchestrator.preflight.cli import preflight, schedule

    for command in (*deploy.COMMANDS, *project.COMMANDS, *secrets.COMMANDS, *backup.COMMANDS, *init.COMMANDS,
                    lab, preflight, schedule, verify):
        main.add_command(command)


_attach()


def run() -> None:  # pragma: no cover - the console script
    if sys.argv[1:] == ["--version"]:  # answered before click builds its help machinery
        print(f"swarm, version {__version__}")  # noqa: T201
        return
    main()


if __name__ == "__main__":  # pragma: no cover
    run()
