"""`swarm preflight` and `swarm schedule`: the click side of preflight.

`preflight` runs the checks (`orchestrator.preflight.run`), renders the report as text,
JSON, JUnit or Prometheus, prints it or replaces `--out` atomically, and exits 0 when
every check passed, 1 when one failed (or warned, with `--strict`), 2 on bad input.
With `--every 15m` it keeps running until SIGTERM/SIGINT, rewriting `--out` each time.
`schedule install/remove` write or delete the systemd service + timer pair that runs
`swarm preflight --output prometheus --out FILE` on a schedule — or, with `--backup`,
`swarm backup --metrics FILE` (daily unless told otherwise; docs/backup.md).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.common import (
    Context,
    handle_errors,
    pass_ctx,
    phase_option,
    phases_of,
    project_options,
)
from orchestrator.errors import InputError, SwarmError
from orchestrator.preflight import schedule as sched

if TYPE_CHECKING:
    from orchestrator.preflight.report import Report
    from orchestrator.preflight.run import Options

RENDERERS = ("text", "json", "junit", "prometheus")

def _run(ctx: Context, phase: str | None, limit: str | None, options: Options) -> Report:
    """One preflight over the run selection's nodes (`--phase` of validation only: every phase)."""
    import asyncio

    from orchestrator.engine.selection import checked_phases, select
    from orchestrator.preflight.run import preflight as run_preflight

    project = ctx.project()
    sel = select(project, checked_phases(project, phases_of(project, phase)), limit)
    return asyncio.run(run_preflight(project, sel.preflight_scope(), options))


@click.command("preflight")
@phase_option
@click.option("--limit", help="only these nodes or groups (comma separated)")
@click.option("--output", type=click.Choice(list(RENDERERS)), default="text", show_default=True)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="write the report to FILE (atomically) instead of stdout")
@click.option("--smoke", is_flag=True, help="also `docker run --platform P IMAGE <version>` on nodes")
@click.option("--strict", is_flag=True, help="warnings fail too (exit 1)")
@click.option("--every", metavar="DURATION",
              help="keep running, every DURATION (e.g. 15m); stop cleanly on SIGTERM")
@project_options
@pass_ctx
@handle_errors
def preflight(ctx: Context, phase: str | None, limit: str | None, output: str, out: Path | None,
              smoke: bool, strict: bool, every: str | None) -> None:
    """Prove a phase can succeed before it starts: access, images per architecture, GPUs
    and heat, ports, the protected Qdrant, secrets, and the network between nodes."""
    from orchestrator.preflight.run import Options

    options = Options(smoke=smoke)
    if every is not None:
        _loop(ctx, phase, limit, options, output, out, every)
        return
    report = _run(ctx, phase, limit, options)
    _publish(report, output, out)
    sys.exit(report.exit_code(strict))


def _publish(report: Report, output: str, out: Path | None) -> None:
    from orchestrator.preflight.report import render, summary_line, write_atomic

    text = render(report, output)
    if out is None:
        click.echo(text, nl=False)
        return
    write_atomic(out, text)
    click.echo(f"{summary_line(report)}; report in {out}", err=True)


def _loop(ctx: Context, phase: str | None, limit: str | None, options: Options, output: str, out: Path | None,
          every: str) -> None:
    from orchestrator.preflight.report import Report, render, summary_line

    interval = sched.parse_duration(every)
    render(Report.of([]), output)  # a bad --output fails now, not at the first run

    def once() -> str:
        report = _run(ctx, phase, limit, options)
        click.echo(summary_line(report), err=True)
        text = render(report, output)
        if out is None:
            click.echo(text, nl=False)
        return text

    def on_error(exc: Exception) -> None:
        if isinstance(exc, InputError):
            raise exc
        click.echo(f"preflight run failed: {exc}", err=True)

    stop = threading.Event()
    with sched.stop_on_signals(stop):
        runs = sched.run_every(interval, once, stop, out=out, on_error=on_error)
    click.echo(f"preflight: stopped after {runs} run(s)", err=True)


# --- schedule ----------------------------------------------------------------------------------


def default_out(scope: sched.Scope) -> Path:
    """Where the timer's Prometheus text goes: the node exporter's textfile directory
    for a system schedule, the user's state directory otherwise."""
    if scope == "system":
        return Path("/var/lib/prometheus/node-exporter/swarm_preflight.prom")
    return Path.home() / ".local/state/swarm/preflight.prom"


def default_backup_out(scope: sched.Scope) -> Path:
    """Where the backup timer's gauges go (beside preflight's)."""
    if scope == "system":
        return Path("/var/lib/prometheus/node-exporter/swarm_backup.prom")
    return Path.home() / ".local/state/swarm/backup.prom"


def swarm_program() -> list[str]:
    """An absolute command line that runs swarm without the caller's PATH."""
    found = shutil.which("swarm")
    if found:
        return [str(Path(found).resolve())]
    return [sys.executable, "-m", "orchestrator.cli"]


def _project_args(ctx: Context) -> list[str]:
    """The unit runs in the project root (WorkingDirectory=), so swarm finds it there."""
    args: list[str] = []
    if ctx.inventory is not None:
        args += ["-i", str(ctx.inventory.resolve())]
    if ctx.playbook is not None:
        args += ["--playbook", str(ctx.playbook.resolve())]
    return args


@click.group("schedule")
def schedule() -> None:
    """Run preflight (or, with --backup, the backups) on a schedule with a systemd service + timer."""


@schedule.command("install")
@click.option("--backup", is_flag=True,
              help="the backup timer instead: `swarm backup --metrics FILE`, daily unless --every/--on-calendar")
@click.option("--every", metavar="DURATION", help="run every DURATION (e.g. 15m)")
@click.option("--on-calendar", metavar="EXPR", help='or on a systemd calendar ("hourly")')
@click.option("--user", "scope", flag_value="user", default=True, help="user units (default)")
@click.option("--system", "scope", flag_value="system", help="system units (needs root)")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Prometheus text file the timer writes")
@phase_option
@click.option("--limit", help="only these nodes or groups")
@click.option("--name", help=f"unit name (default {sched.DEFAULT_NAME}, or {sched.BACKUP_NAME} with --backup)")
@click.option("--enable", is_flag=True, help="also run systemctl daemon-reload + enable --now")
@click.option("--unit-dir", type=click.Path(path_type=Path, file_okay=False), hidden=True)
@project_options
@pass_ctx
@handle_errors
def schedule_install(ctx: Context, backup: bool, every: str | None, on_calendar: str | None, scope: str,
                     out: Path | None, phase: str | None, limit: str | None, name: str | None,
                     enable: bool, unit_dir: Path | None) -> None:
    """Write the service + timer that run `swarm preflight --output prometheus --out FILE`
    (with --backup: `swarm backup --metrics FILE`)."""
    level = _scope(scope)
    name = name or (sched.BACKUP_NAME if backup else sched.DEFAULT_NAME)
    if every is None and on_calendar is None:
        every, on_calendar = (None, "daily") if backup else ("15m", None)
    when = sched.Schedule(every=every, on_calendar=on_calendar)
    target = (out or (default_backup_out(level) if backup else default_out(level))).expanduser().resolve()
    args = _project_args(ctx) + _filters(phase, limit)
    if backup:
        argv = sched.backup_argv(swarm_program(), target, args)
        units = sched.render_units(argv, when, level, name=name, working_directory=ctx.root.resolve(),
                                   timeout="6h", description="swarm backups", success_codes=())
    else:
        argv = sched.preflight_argv(swarm_program(), target, args)
        units = sched.render_units(argv, when, level, name=name, working_directory=ctx.root.resolve())
    _make_parent(target)
    for path in sched.install(units, level, unit_dir):
        click.echo(f"wrote {path}")
    _systemctl(sched.enable_commands(name, level), run=enable)
    what = "the backups" if backup else "preflight"
    click.echo(f"{name}.timer runs {what} {when.describe()}; results in {target}")


@schedule.command("remove")
@click.option("--backup", is_flag=True, help="the backup timer's units")
@click.option("--user", "scope", flag_value="user", default=True)
@click.option("--system", "scope", flag_value="system")
@click.option("--name", help=f"unit name (default {sched.DEFAULT_NAME}, or {sched.BACKUP_NAME} with --backup)")
@click.option("--disable", is_flag=True, help="first run systemctl disable --now")
@click.option("--unit-dir", type=click.Path(path_type=Path, file_okay=False), hidden=True)
@handle_errors
def schedule_remove(backup: bool, scope: str, name: str | None, disable: bool, unit_dir: Path | None) -> None:
    """Remove the preflight (or --backup) service + timer files."""
    level = _scope(scope)
    name = name or (sched.BACKUP_NAME if backup else sched.DEFAULT_NAME)
    _systemctl(sched.disable_commands(name, level), run=disable)
    removed = sched.remove(name, level, unit_dir)
    for path in removed:
        click.echo(f"removed {path}")
    if not removed:
        click.echo(f"no {name} units installed")


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {path.parent}: {exc.strerror}",
                         hint="pick another --out") from exc


def _scope(value: str) -> sched.Scope:
    if value == "system":
        return "system"
    return "user"


def _filters(phase: str | None, limit: str | None) -> list[str]:
    args = ["--phase", phase] if phase is not None else []
    return args + (["--limit", limit] if limit else [])


def _systemctl(commands: tuple[tuple[str, ...], ...], *, run: bool) -> None:
    """Run the systemctl commands, or show them for the operator to run."""
    for argv in commands:
        if not run:
            click.echo("then run: " + " ".join(argv))
            continue
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SwarmError(f"{' '.join(argv)} failed: {done.stderr.strip()[:200]}",
                             hint="is systemd running for this scope? (user units need a session)")

