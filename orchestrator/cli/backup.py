"""`swarm backup | restore | backups`: the backups of the stateful services (docs/backup.md).

Bad input — an unknown service, one without a backup, a malformed `--from`, retention
settings that make no sense, an unwritable `--metrics` file — is exit 2 before anything
connects. `backup` exits 1 when a service could not be backed up (the others still were),
4 when a deploy held a node's lock, 128 + N when signal N stopped it (the service being
backed up finishes, the rest are skipped, the lock is released); `restore` exits 1 when the
restore or its gate failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.common import (
    Context,
    handle_errors,
    make_bus,
    pass_ctx,
    phase_option,
    phases_of,
    project_options,
    run_async,
    run_engine,
)

if TYPE_CHECKING:
    from orchestrator.backup.restore import RestoreResult
    from orchestrator.backup.run import BackupReport, Outcome

OUTPUT = click.Choice(["text", "json"])


def _names(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@click.command("backup")
@phase_option
@click.option("--limit", help="only these nodes or groups (comma separated)")
@click.option("--service", "services", multiple=True, metavar="NAME[,NAME]",
              help="only these services (each must have a backup)")
@click.option("--metrics", type=click.Path(path_type=Path, dir_okay=False),
              help="write the Prometheus textfile gauges to FILE (atomically), for the node exporter")
@click.option("--output", type=OUTPUT, default="text")
@project_options
@pass_ctx
@handle_errors
def backup(ctx: Context, phase: str | None, limit: str | None, services: tuple[str, ...],
           metrics: Path | None, output: str) -> None:
    """Back up every stateful service of the chosen nodes, by its own method, on its node:
    <deploy_root>/backups/<service>/<id>/ with SHA256SUMS and a manifest; retention and the
    copy to another node from the inventory."""
    from orchestrator.backup.plan import backup_targets
    from orchestrator.backup.run import backup as run_backup

    project = ctx.project()
    targets = backup_targets(project, names=_names(services), phases=phases_of(project, phase), limit=limit)
    if metrics is not None:
        _check_writable(metrics)
    bus = make_bus(ctx, output)
    report = run_engine(lambda i: run_backup(project, targets, bus, interrupts=i), bus, stopping=(
        "finishing the backup under way (what it stopped starts again); the others are not started",
        "still finishing the backup under way: a half-written backup is never kept"))
    if metrics is not None:
        from orchestrator.backup.metrics import render
        from orchestrator.preflight.report import write_atomic

        write_atomic(metrics, render(report))
    _show_backup(report, output, metrics)
    sys.exit(report.exit_code)


def _check_writable(path: Path) -> None:
    from orchestrator.errors import InputError

    if not path.parent.is_dir():
        raise InputError(f"--metrics {path}: no directory {path.parent}", hint="create it, or pick another file")


def _show_backup(report: BackupReport, output: str, metrics: Path | None) -> None:
    from orchestrator.secrets import scrub

    if output == "json":
        click.echo(scrub(json.dumps(_report_json(report), indent=2, sort_keys=True)))
        return
    for outcome in report.outcomes:
        click.echo(scrub(_outcome_line(outcome)))
    done = sum(o.ok for o in report.outcomes)
    tail = f"; gauges in {metrics}" if metrics is not None else ""
    click.echo(f"backup {report.backup_id}: {done} of {len(report.outcomes)} service(s) backed up in "
               f"{report.duration_s:.1f}s{tail}")


def _outcome_line(outcome: Outcome) -> str:
    from orchestrator.backup.model import human_size

    target, manifest = outcome.target, outcome.manifest
    head = f"{target.node:<10} {target.service:<12}"
    if outcome.skipped:
        return f"{head} skipped: {outcome.error}"
    if not outcome.ok or manifest is None:
        return f"{head} FAILED: {outcome.error}"
    what = ("contains secrets: 0600 files, 0700 directory" if target.contains_secrets else
            f"{', '.join(sorted(manifest.files))}, {human_size(manifest.size)}")
    line = f"{head} {outcome.directory} ({what}; {manifest.duration_s:.1f}s) sha256 {manifest.checksum}"
    if outcome.pruned:
        line += f"; pruned {len(outcome.pruned)} older"
    if outcome.copied_to:
        line += f"; copy verified on {outcome.copied_to}"
    if outcome.copy_error:
        line += f"; COPY FAILED: {outcome.copy_error}"
    return line


def _report_json(report: BackupReport) -> dict[str, Any]:
    def one(o: Outcome) -> dict[str, Any]:
        m = o.manifest
        entry: dict[str, Any] = {"service": o.target.service, "node": o.target.node, "method": o.target.method,
                                 "ok": o.ok, "skipped": o.skipped, "error": o.error, "directory": o.directory,
                                 "pruned": list(o.pruned), "copied_to": o.copied_to, "copy_error": o.copy_error}
        if m is not None:
            entry.update(checksum=m.checksum, size=m.size, duration_s=round(m.duration_s, 3),
                         contains_secrets=m.contains_secrets)
            if not m.contains_secrets:
                entry["files"] = sorted(m.files)
        return entry

    return {"backup": report.backup_id, "duration_s": round(report.duration_s, 3),
            "exit_code": report.exit_code, "services": [one(o) for o in report.outcomes]}


@click.command("restore")
@click.option("--service", required=True, help="the service to restore (one)")
@click.option("--from", "from_id", metavar="ID", help="the backup to restore (default: the newest)")
@click.option("--force", metavar="SERVICE", help="restore a protected service: name it here")
@click.option("--key-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Vault: unseal with the keys kept by `swarm vault init` after the restore")
@project_options
@pass_ctx
@handle_errors
def restore(ctx: Context, service: str, from_id: str | None, force: str | None, key_file: Path | None) -> None:
    """Put a backup back: stop what depends on the service, restore it by its method, start them
    again and gate them all. Never part of a deploy or a rollback."""
    from orchestrator.backup.plan import restore_target
    from orchestrator.backup.restore import check_request
    from orchestrator.backup.restore import restore as run_restore
    from orchestrator.render.services import build_services

    project = ctx.project()
    services = build_services(project)
    target = restore_target(project, service, services)
    check_request(target, from_id, force)
    bus = make_bus(ctx, "text")
    result = run_engine(lambda i: run_restore(project, target, services, bus, backup_id=from_id,
                                              key_file=key_file, interrupts=i), bus, stopping=(
        "stopping the restore at its next safe point, then unlocking (`swarm status` shows what runs)",
        "still stopping the restore at its next safe point"))
    _show_restore(result)


def _show_restore(result: RestoreResult) -> None:
    target = result.target
    checksum = result.manifest.checksum if result.manifest else "?"
    came = f" (brought back from {result.from_copy})" if result.from_copy else ""
    click.echo(f"{target.service} on {target.node}: restored backup {result.backup_id}{came}, sha256 {checksum}")
    if result.stopped:
        click.echo("stopped and started again: " + ", ".join(f"{s} on {n}" for n, s in result.stopped))
    click.echo("healthy: " + ", ".join(result.gated))
    if target.method == "vault-file":
        if result.sealed is False:
            click.echo("Vault: unsealed")
        else:
            click.echo("Vault: sealed (its storage is as it was): `swarm vault unseal --key-file FILE`")


@click.command("backups")
@phase_option
@click.option("--limit", help="only these nodes or groups")
@click.option("--service", "services", multiple=True, metavar="NAME[,NAME]")
@click.option("--output", type=OUTPUT, default="text")
@project_options
@pass_ctx
@handle_errors
def backups(ctx: Context, phase: str | None, limit: str | None, services: tuple[str, ...], output: str) -> None:
    """List the backups each node keeps (and the copies on copy_to nodes): ids, sizes, checksums."""
    from orchestrator.backup.model import human_size
    from orchestrator.backup.plan import backup_targets
    from orchestrator.backup.run import list_all

    project = ctx.project()
    targets = backup_targets(project, names=_names(services), phases=phases_of(project, phase), limit=limit)
    found = run_async(list_all(project, targets))
    if output == "json":
        click.echo(json.dumps(found, indent=2, sort_keys=True))
        return
    for entry in found:
        where = f"{entry['service']} on {entry['node']}" + (" (copies)" if entry["copy"] else "")
        if entry["error"]:
            click.echo(f"{where}: unreachable: {entry['error']}")
            continue
        click.echo(f"{where}: {len(entry['backups'])} backup(s)")
        for b in entry["backups"]:
            click.echo(f"  {b['id']}  {human_size(b['size'])}  sha256 {b['checksum']}")


COMMANDS = (backup, restore, backups)
