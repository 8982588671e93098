"""The `swarm` command: the group, its global options, and where each sub-command lives.

`common` holds what every command shares (context, errors and exit codes, the event bus,
running the engine under signal handling); each other module holds commands: `deploy`
(deploy, rollback, releases, status, unlock, trust), `project` (render, plan), `secrets`
(secrets, vault), `backup`, `init`, `preflight` (preflight, schedule), `verify` and `lab`.
Every command is here and only here; a command's module is imported when it runs.
"""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import click

from orchestrator import __version__
from orchestrator.cli.common import Context, SafeLogFormatter

# Where each sub-command lives, and the first paragraph of its help: a command's module is
# imported only when that command runs, so `swarm deploy` never loads the lab, preflight
# scheduling or the conformance checks, and `swarm --help` lists them all without importing
# any (tests/unit/test_layout.py keeps the summaries equal to the docstrings).
LAZY: dict[str, tuple[str, str]] = {
    "deploy": ("orchestrator.cli.deploy",
        "Deploy phases in order: every node of a phase ends healthy on its new release, or "
        "back on its previous one. A failed phase is rolled back; earlier phases keep their "
        "new releases."),
    "rollback": ("orchestrator.cli.deploy",
        "Bring a phase back to its release before the current one (or --to one), gated like a "
        "deploy. Protected services are never removed or recreated."),
    "releases": ("orchestrator.cli.deploy",
        "List each node's releases; * marks the current one. An unreachable node is reported, "
        "not fatal."),
    "unlock": ("orchestrator.cli.deploy",
        "Break a stale deploy lock (say which nodes); the node's audit log records who did."),
    "trust": ("orchestrator.cli.deploy",
        "Fetch a node's SSH host key, show its fingerprint and record it in known_hosts."),
    "status": ("orchestrator.cli.deploy",
        "Per node: the current release, a held lock, and each service's health in Consul."),
    "render": ("orchestrator.cli.project",
        "Render one compose project (+ config files) per node; the real tools check them "
        "first."),
    "plan": ("orchestrator.cli.project",
        "Show what runs where, port use, RAM and the GPU memory budget; exit 2 if it cannot "
        "fit."),
    "secrets": ("orchestrator.cli.secrets",
        "Secrets in Vault (KV v2): push from an env file, list names and versions, check what "
        "is missing."),
    "vault": ("orchestrator.cli.secrets",
        "Bootstrap the fleet's Vault: initialise and unseal once, keys kept in a 0600 file."),
    "backup": ("orchestrator.cli.backup",
        "Back up every stateful service of the chosen nodes, by its own method, on its node: "
        "<deploy_root>/backups/<service>/<id>/ with SHA256SUMS and a manifest; retention and "
        "the copy to another node from the inventory."),
    "restore": ("orchestrator.cli.backup",
        "Put a backup back: stop what depends on the service, restore it by its method, start "
        "them again and gate them all. Never part of a deploy or a rollback."),
    "backups": ("orchestrator.cli.backup",
        "List the backups each node keeps (and the copies on copy_to nodes): ids, sizes, "
        "checksums."),
    "models": ("orchestrator.cli.models",
        "Model weights in the fleet: each node's store, staging from peers, the mirror or the hub, "
        "and collecting what no release uses."),
    "init": ("orchestrator.cli.init",
        "Write a new project in DIRECTORY: an inventory of your machines, a playbook, a "
        "README."),
    "lab": ("orchestrator.cli.lab",
        "Local test fleet: network namespaces with their own sshd, dockerd and registry."),
    "preflight": ("orchestrator.cli.preflight",
        "Prove a phase can succeed before it starts: access, images per architecture, GPUs "
        "and heat, ports, the protected Qdrant, secrets, and the network between nodes."),
    "schedule": ("orchestrator.cli.preflight",
        "Run preflight (or, with --backup, the backups) on a schedule with a systemd service "
        "+ timer."),
    "verify": ("orchestrator.cli.verify",
        "Check that the fleet is what the inventory, playbook and roles say (testinfra); exit "
        "1 on drift."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (`LAZY`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*LAZY, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            # __import__, not importlib.import_module: the same path as an import statement
            # (and so seen by `python -X importtime`, which bench/ and the tests read)
            module = LAZY[cmd_name][0]
            command = getattr(__import__(module, fromlist=[cmd_name]), cmd_name)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, from the summaries for commands not imported yet."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is not None:
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
            else:
                # click's own shortening, on a stand-in command carrying the kept summary
                summary = click.Command(name, help=LAZY[name][1])
                rows.append((name, summary.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeLogFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    ctx.obj = Context(root=root or find_root(), inventory=inventory, playbook=playbook, verbose=verbose)


def run() -> None:  # pragma: no cover - the console script
    if sys.argv[1:] == ["--version"]:  # answered before click builds its help machinery
        print(f"swarm, version {__version__}")  # noqa: T201
        return
    try:
        main()
    finally:
        quick_exit()


def quick_exit() -> None:
    """Spare the interpreter's last cycle collection over everything the run imported or made.

    At exit CPython collects every tracked object once more (asyncssh, cryptography, click...):
    ~50 ms of a ~420 ms no-op deploy on the lab (15 alternating runs with and without it,
    2026-12-06: 424 against 372 ms). Frozen objects are left to the process's end instead;
    everything else still happens as before — threads are joined, atexit handlers run
    (weakref.finalize too), objects no cycle holds are freed, the std streams are flushed.
    What is lost is `__del__` of objects in a cycle at exit, which Python never promised (the
    data model's note on `__del__`): swarm's files are closed as written.
    """
    gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    run()
