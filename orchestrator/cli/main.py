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
from orchestrator.cli.common import Context

# Where each sub-command lives: a command's module is imported only when that command runs
# (or `--help` lists them all), so `swarm deploy` never loads the lab, preflight scheduling
# or the conformance checks.
LAZY = {
    **{name: "orchestrator.cli.deploy" for name in ("deploy", "rollback", "releases", "unlock", "trust", "status")},
    **{name: "orchestrator.cli.project" for name in ("render", "plan")},
    **{name: "orchestrator.cli.secrets" for name in ("secrets", "vault")},
    **{name: "orchestrator.cli.backup" for name in ("backup", "restore", "backups")},
    "init": "orchestrator.cli.init",
    "lab": "orchestrator.lab.cli",
    "preflight": "orchestrator.preflight.cli",
    "schedule": "orchestrator.preflight.cli",
    "verify": "orchestrator.conformance.cli",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (`LAZY`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*LAZY, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            # __import__, not importlib.import_module: the same path as an import statement
            # (and so seen by `python -X importtime`, which bench/ and the tests read)
            command = getattr(__import__(LAZY[cmd_name], fromlist=[cmd_name]), cmd_name)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def run() -> None:  # pragma: no cover - the console script
    if sys.argv[1:] == ["--version"]:  # answered before click builds its help machinery
        print(f"swarm, version {__version__}")  # noqa: T201
        return
    main()


if __name__ == "__main__":  # pragma: no cover
    run()
