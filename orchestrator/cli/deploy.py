"""`swarm deploy | rollback | releases | status | unlock | trust`: the commands that reach nodes."""

from __future__ import annotations

import json
import sys

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

OUTPUT = click.Choice(["text", "json"])


@click.command()
@phase_option
@click.option("--limit", help="only these nodes or groups (comma separated)")
@click.option("--check", is_flag=True, help="change nothing; report what would change")
@click.option("--diff", is_flag=True, help="with --check: unified diffs of rendered files (secrets masked)")
@click.option("--forks", type=click.IntRange(1, 1024), default=64, show_default=True, help="hosts in parallel")
@click.option("--skip-preflight", is_flag=True, help="do not run the phases' preflight checks first (not advised)")
@click.option("--output", type=OUTPUT, default="text")
@project_options
@pass_ctx
@handle_errors
def deploy(ctx: Context, phase: str | None, limit: str | None, check: bool, diff: bool, forks: int,
           skip_preflight: bool, output: str) -> None:
    """Deploy phases in order: every node of a phase ends healthy on its new release, or back on
    its previous one. A failed phase is rolled back; earlier phases keep their new releases."""
    from orchestrator.engine.context import DeployRequest
    from orchestrator.engine.deploy import deploy as run_deploy

    request = DeployRequest(root=ctx.root, inventory=ctx.inventory_path(), playbook=ctx.playbook_path(),
                            phase_text=phase, limit=limit, load=ctx.project, check=check or diff, diff=diff,
                            forks=forks, skip_preflight=skip_preflight)
    bus = make_bus(ctx, output)
    result = run_engine(lambda interrupts: run_deploy(request, bus, interrupts), bus)
    for line in result.check_report:
        click.echo(line)
    if output != "text" or result.check_report:
        return
    for node, why in sorted(result.skipped.items()):
        click.echo(f"{node}: skipped (optional, unreachable: {why})")
    for node, release in sorted(result.releases.items()):
        state = "changed" if node in result.changed_nodes else "unchanged"
        click.echo(f"{node}: {state} (release {release or 'none'})")


@click.command()
@phase_option
@click.option("--limit", help="only these nodes or groups")
@click.option("--to", "to", metavar="RELEASE", help="a named release of the phase instead of the one before")
@click.option("--resume", is_flag=True, help="finish a rollback that was cut off (a second signal, a dead link)")
@click.option("--forget", is_flag=True,
              help="drop the record of a cut-off rollback that cannot finish (the nodes were fixed by hand)")
@click.option("--output", type=OUTPUT, default="text")
@project_options
@pass_ctx
@handle_errors
def rollback(ctx: Context, phase: str | None, limit: str | None, to: str | None, resume: bool,
             forget: bool, output: str) -> None:
    """Bring a phase back to its release before the current one (or --to one), gated like a deploy.
    Protected services are never removed or recreated."""
    from orchestrator.engine.phases import one_phase
    from orchestrator.engine.resume import forget_pending, resume_pending
    from orchestrator.engine.rollback import RollbackOptions, check_release_name
    from orchestrator.engine.rollback import rollback as run_rollback

    check_release_name(to)
    number = None if resume or forget else one_phase(phase, "rollback")
    project = ctx.project()
    if forget:
        dropped = forget_pending(project)
        click.echo("no unfinished rollback recorded" if dropped is None else
                   f"forgot the unfinished rollback of phase {dropped.phase} that run {dropped.run_id} left on "
                   f"{', '.join(dropped.nodes) or 'Consul only'} (those nodes were not checked: "
                   "`swarm verify` tells what runs there)")
        return
    bus = make_bus(ctx, output)
    if resume:
        done = run_engine(lambda i: resume_pending(project, bus, limit_to=None, interrupts=i, required=True), bus)
        if output == "text":
            click.echo("interrupted rollback finished" if done else "no interrupted rollback to finish")
        return
    assert number is not None
    options = RollbackOptions(phase=project.playbook.phase(number).id, limit=limit, to=to)
    result = run_engine(lambda i: run_rollback(project, options, bus, interrupts=i), bus)
    if output == "text":
        for node, release in sorted(result.items()):
            click.echo(f"{node}: now on {release}")
        if not result:
            click.echo("nothing rolled back")


@click.command()
@phase_option
@click.option("--limit")
@click.option("--output", type=OUTPUT, default="text")
@project_options
@pass_ctx
@handle_errors
def releases(ctx: Context, phase: str | None, limit: str | None, output: str) -> None:
    """List each node's releases; * marks the current one. An unreachable node is reported, not fatal."""
    from orchestrator.engine.status import as_json, list_releases
    from orchestrator.events import EventBus

    project = ctx.project()
    found = run_async(list_releases(project, phases_of(project, phase), limit, EventBus()))
    if output == "json":
        click.echo(as_json(found))
        return
    for entry in found:
        if entry.error:
            tag = "optional, " if entry.optional else ""
            click.echo(f"{entry.node}: ({tag}unreachable: {entry.error})")
            continue
        click.echo(f"{entry.node}:")
        for r in entry.releases:
            mark = "*" if r.current else " "
            how = f"  rollback to {r.rolled_back_to}" if r.rolled_back_to else ""
            click.echo(f"  {mark} {r.id}  phase {r.phase}  {r.created}  by {r.by}  "
                       f"({len(r.applied)} services){how}")
        if not entry.releases:
            click.echo("    (no releases)")
    if any(e.error and not e.optional for e in found):
        sys.exit(1)


@click.command()
@click.option("--limit", required=True, help="the nodes whose stale lock to break")
@project_options
@pass_ctx
@handle_errors
def unlock(ctx: Context, limit: str) -> None:
    """Break a stale deploy lock (say which nodes); the node's audit log records who did."""
    from orchestrator.engine.status import unlock as do_unlock
    from orchestrator.events import EventBus

    broken = run_async(do_unlock(ctx.project(), limit, EventBus()))
    for node, holder in broken.items():
        click.echo(f"{node}: broke the lock held by {holder}")
    if not broken:
        click.echo("no locks held")


@click.command()
@click.argument("hosts", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="record without asking (only after checking fingerprints out of band)")
@project_options
@pass_ctx
@handle_errors
def trust(ctx: Context, hosts: tuple[str, ...], yes: bool) -> None:
    """Fetch a node's SSH host key, show its fingerprint and record it in known_hosts."""
    from orchestrator.addresses import host_port
    from orchestrator.errors import InputError
    from orchestrator.transport.ssh import fetch_host_key, record_host_key

    project = ctx.project()
    for node in project.inventory.select(",".join(hosts)):
        known = project.inventory.resolve_path(node.ssh.known_hosts)
        if known is None:
            raise InputError(f"{node.name} has no ssh.known_hosts file configured")
        key = run_async(fetch_host_key(node.address, node.ssh.port, timeout=node.ssh.connect_timeout))
        click.echo(f"{node.name} ({host_port(node.address, node.ssh.port)}) {key.algorithm} {key.fingerprint}")
        if not yes and not click.confirm(f"record this key for {node.name} in {known}?", default=False):
            click.echo("not recorded")
            continue
        added = record_host_key(key, known)
        click.echo(f"{'recorded in' if added else 'already in'} {known}")


@click.command()
@click.option("--limit")
@click.option("--output", type=OUTPUT, default="text")
@project_options
@pass_ctx
@handle_errors
def status(ctx: Context, limit: str | None, output: str) -> None:
    """Per node: the current release, a held lock, and each service's health in Consul."""
    from dataclasses import asdict

    from orchestrator.engine.status import fleet_status

    nodes = run_async(fleet_status(ctx.project(), limit))
    if output == "json":
        click.echo(json.dumps([asdict(n) for n in nodes], indent=2))
    bad = False
    for node in nodes:
        if node.error:
            bad |= not node.optional
            if output == "text":
                click.echo(f"{node.node}: {'optional, ' if node.optional else ''}unreachable: {node.error}")
            continue
        if output == "text":
            click.echo(f"{node.node}: {node.release or 'no release'}" + (f"  (locked by {node.lock})" if node.lock else ""))
        for svc, state in sorted(node.services.items()):
            bad |= state != "passing"
            if output == "text":
                click.echo(f"  {svc:<20} {state}")
    if bad:
        sys.exit(1)


COMMANDS = (deploy, rollback, releases, unlock, trust, status)
