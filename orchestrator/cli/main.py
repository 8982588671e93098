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

from orchestrator import __version__
from orchestrator.config.project import Project, find_root, load_project
from orchestrator.errors import InputError, SwarmError
from orchestrator.secrets import scrub

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


@main.command()
@click.option("--phase", type=int, help="only this phase's services")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@project_options
@pass_ctx
@handle_errors
def plan(ctx: Context, phase: int | None, output: str) -> None:
    """Show what runs where, port use, RAM and the GPU memory budget; exit 2 if it cannot fit."""
    from orchestrator.render.fleet import render_fleet
    from orchestrator.render.plan import as_dict, describe, make_plan, require_feasible
    from orchestrator.render.validate import check_rendered

    project = ctx.project()
    if phase is not None:
        project.playbook.phase(phase)  # an unknown phase is bad input, before anything else
    result = make_plan(project, phase)
    if output == "json":
        click.echo(json.dumps(as_dict(result), indent=2, default=str))
    else:
        for line in describe(result):
            click.echo(line)
    require_feasible(result, project.inventory.path)
    check_rendered(project, render_fleet(project))  # what would be deployed must also be valid


def make_bus(ctx: Context, output: str) -> Any:
    """The event stream with its renderers: live view on a terminal, plain lines otherwise, or JSON."""
    from orchestrator.engine.deploy import local_state_dir
    from orchestrator.events import AuditLog, EventBus, JsonRenderer, LiveRenderer, PlainRenderer

    bus = EventBus()
    if output == "json":
        bus.subscribe(JsonRenderer(sys.stdout))
    elif sys.stderr.isatty() and ctx.verbose < 2:
        bus.subscribe(LiveRenderer(ctx.verbose))
    else:
        bus.subscribe(PlainRenderer(sys.stderr, ctx.verbose))
    bus.subscribe(AuditLog(local_state_dir() / "audit.log"))
    return bus


def run_async(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


@main.command()
@click.option("--phase", type=int, required=True, help="the playbook phase to deploy")
@click.option("--limit", help="only these nodes or groups (comma separated)")
@click.option("--check", is_flag=True, help="change nothing; report what would change")
@click.option("--diff", is_flag=True, help="with --check: unified diffs of rendered files (secrets masked)")
@click.option("--forks", type=click.IntRange(1, 1024), default=64, show_default=True, help="hosts in parallel")
@click.option("--skip-preflight", is_flag=True, help="do not run the phase's preflight checks first (not advised)")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@project_options
@pass_ctx
@handle_errors
def deploy(ctx: Context, phase: int, limit: str | None, check: bool, diff: bool, forks: int,
           skip_preflight: bool, output: str) -> None:
    """Deploy one phase: every node ends healthy on its new release, or back on its previous one."""
    from orchestrator.engine.deploy import Deployer, Options

    project = ctx.project()
    bus = make_bus(ctx, output)
    options = Options(phase=phase, limit=limit, check=check or diff, diff=diff, forks=forks,
                      skip_preflight=skip_preflight)
    result = run_async(Deployer(project, options, bus).run())
    for line in result.check_report:
        click.echo(line)
    if output == "text" and not result.check_report:
        for node, release in sorted(result.releases.items()):
            state = "changed" if node in result.changed else "unchanged"
            click.echo(f"{node}: {state} (release {release or 'none'})")


@main.command()
@click.option("--phase", type=int, help="only the services of this phase")
@click.option("--limit", help="only these nodes or groups")
@click.option("--to", "to", metavar="RELEASE", help="a named release instead of the previous one")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@project_options
@pass_ctx
@handle_errors
def rollback(ctx: Context, phase: int | None, limit: str | None, to: str | None, output: str) -> None:
    """Bring nodes back to their previous release (or --to one), gated like a deploy."""
    from orchestrator.engine.rollback import Rollback

    project = ctx.project()
    if phase is None and limit is None:
        raise InputError("say which nodes to roll back: --phase N and/or --limit HOST")
    result = run_async(Rollback(project, phase, limit, to, make_bus(ctx, output)).run())
    for node, release in sorted(result.items()):
        click.echo(f"{node}: {'now on ' + release if release else 'unchanged'}")


@main.command()
@click.option("--phase", type=int)
@click.option("--limit")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@project_options
@pass_ctx
@handle_errors
def releases(ctx: Context, phase: int | None, limit: str | None, output: str) -> None:
    """List each node's releases; * marks the current one."""
    from dataclasses import asdict

    from orchestrator.engine.rollback import list_releases
    from orchestrator.events import EventBus

    found = run_async(list_releases(ctx.project(), phase, limit, EventBus()))
    if output == "json":
        click.echo(json.dumps({n: [asdict(r) for r in rs] for n, rs in found.items()}, indent=2))
        return
    for node, items in found.items():
        click.echo(f"{node}:")
        for r in items:
            mark = "*" if r.current else " "
            click.echo(f"  {mark} {r.id}  phase {r.phase}  {r.created}  by {r.by}  ({len(r.applied)} services)")
        if not items:
            click.echo("    (no releases)")


@main.command()
@click.option("--limit", required=True, help="the nodes whose stale lock to break")
@project_options
@pass_ctx
@handle_errors
def unlock(ctx: Context, limit: str) -> None:
    """Break a stale deploy lock (say which nodes); the audit log records who did."""
    from orchestrator.engine.rollback import unlock as do_unlock
    from orchestrator.events import EventBus

    broken = run_async(do_unlock(ctx.project(), limit, EventBus()))
    for node, holder in broken.items():
        click.echo(f"{node}: broke the lock held by {holder}")
    if not broken:
        click.echo("no locks held")


@main.command()
@click.argument("hosts", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="record without asking (only after checking fingerprints out of band)")
@project_options
@pass_ctx
@handle_errors
def trust(ctx: Context, hosts: tuple[str, ...], yes: bool) -> None:
    """Fetch a node's SSH host key, show its fingerprint and record it in known_hosts."""
    from orchestrator.transport.ssh import fetch_host_key, record_host_key

    project = ctx.project()
    nodes = project.inventory.select(",".join(hosts))
    for node in nodes:
        known = project.inventory.resolve_path(node.ssh.known_hosts)
        if known is None:
            raise InputError(f"{node.name} has no ssh.known_hosts file configured")
        key = run_async(fetch_host_key(node.address, node.ssh.port, timeout=node.ssh.connect_timeout))
        click.echo(f"{node.name} ({node.address}:{node.ssh.port}) {key.algorithm} {key.fingerprint}")
        if not yes and not click.confirm(f"record this key for {node.name} in {known}?", default=False):
            click.echo("not recorded")
            continue
        added = record_host_key(key, known)
        click.echo(f"{'recorded in' if added else 'already in'} {known}")


@main.command()
@click.option("--limit")
@project_options
@pass_ctx
@handle_errors
def status(ctx: Context, limit: str | None) -> None:
    """Per node: the current release and each service's health in Consul."""
    from orchestrator.engine.status import fleet_status

    bad = False
    for node in run_async(fleet_status(ctx.project(), limit)):
        head = node.release or ("unreachable: " + node.error if node.error else "no release")
        click.echo(f"{node.node}: {head}")
        for svc, state in sorted(node.services.items()):
            bad |= state != "passing"
            click.echo(f"  {svc:<20} {state}")
    if bad:
        sys.exit(1)


@main.group()
def secrets() -> None:
    """Secrets in Vault (KV v2): push from an env file, list names and versions, check what is missing."""


@secrets.command("push")
@click.option("--env-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True)
@click.option("--mount", help="KV v2 mount (default: inventory vault.mount)")
@click.option("--path", "base", help="base path (default: inventory vault.path)")
@project_options
@pass_ctx
@handle_errors
def secrets_push(ctx: Context, env_file: Path, mount: str | None, base: str | None) -> None:
    """Write the env file's keys into Vault, one secret per path the playbook declares (check-and-set)."""
    from orchestrator.clients.secrets_source import SecretSource, match_env_keys, push
    from orchestrator.clients.vault import parse_env_file

    project = ctx.project()
    source = SecretSource.from_project(project)
    source.mount = mount or source.mount
    source.base_path = (base or source.base_path).strip("/")
    values, unknown = match_env_keys(parse_env_file(env_file), source.declared)
    for key in unknown:
        click.echo(f"skipped {key}: not a secret the playbook declares", err=True)
    if not values:
        raise InputError(f"no key of {env_file} matches a secret the playbook declares", file=str(env_file))
    for path, version, keys, changed in push(source, values):
        state = "written" if changed else "unchanged"
        click.echo(f"{source.mount}/{path}: {state}, version {version} ({', '.join(keys)})")


@secrets.command("list")
@project_options
@pass_ctx
@handle_errors
def secrets_list(ctx: Context) -> None:
    """Secret names and versions under the fleet's path — never values."""
    from orchestrator.clients.secrets_source import SecretSource

    source = SecretSource.from_project(ctx.project())
    for info in source.client().list_secrets(source.mount, source.base_path):
        state = " (deleted)" if info.deleted else ""
        click.echo(f"{source.mount}/{info.path}  v{info.version}{state}  keys: {', '.join(info.keys) or '-'}")


@secrets.command("check")
@click.option("--phase", type=int, help="only what this phase needs")
@project_options
@pass_ctx
@handle_errors
def secrets_check(ctx: Context, phase: int | None) -> None:
    """Exit 1 listing the secrets the playbook needs that Vault does not hold."""
    from orchestrator.clients.secrets_source import SecretSource
    from orchestrator.render.services import build_services

    project = ctx.project()
    source = SecretSource.from_project(project)
    services = [s for s in build_services(project) if phase is None or s.phase == phase]
    missing = source.missing(source.names_for(services))
    for name in missing:
        spec = source.declared[name]
        click.echo(f"missing: {name} ({source.mount}/{source.full_path(spec)} key {spec.key})")
    if missing:
        fail(f"{len(missing)} secret(s) missing in Vault: push them with `swarm secrets push --env-file FILE`", 1)
    click.echo("all secrets present")


@main.group()
def vault() -> None:
    """Bootstrap the fleet's Vault: initialise and unseal once, keys kept in a 0600 file."""


@vault.command("init")
@click.option("--key-file", required=True, help="where to keep unseal keys + root token (0600)")
@click.option("--shares", type=int, default=1, show_default=True)
@click.option("--threshold", type=int, default=1, show_default=True)
@project_options
@pass_ctx
@handle_errors
def vault_init(ctx: Context, key_file: str, shares: int, threshold: int) -> None:
    """Initialise (if fresh) and unseal the inventory's Vault, and mount KV v2."""
    from orchestrator.clients.secrets_source import SecretSource
    from orchestrator.clients.vault import bootstrap, check_init_options

    check_init_options(key_file, shares, threshold)  # bad options: exit 2 before connecting
    source = SecretSource.from_project(ctx.project())
    addr = source.addr
    result = bootstrap(addr, key_file, shares=shares, threshold=threshold, kv_mount=source.mount,
                       verify=source.tls()["verify"])  # type: ignore[arg-type]
    click.echo(f"Vault at {addr}: {'initialised and ' if result.initialized else ''}unsealed; keys in {key_file}")


@vault.command("unseal")
@click.option("--key-file", type=click.Path(path_type=Path, exists=True), required=True)
@project_options
@pass_ctx
@handle_errors
def vault_unseal(ctx: Context, key_file: Path) -> None:
    """Unseal the inventory's Vault with the keys kept by `swarm vault init`."""
    from orchestrator.clients.vault import unseal

    addr = ctx.project().inventory.spec.vault.addr
    status = unseal(addr, key_file)
    click.echo(f"Vault at {addr}: {'sealed' if status.sealed else 'unsealed'}")


def _attach_optional_groups() -> None:
    """Sub-command groups that live in their own modules."""
    from orchestrator.conformance.cli import verify
    from orchestrator.lab.cli import lab
    from orchestrator.preflight.cli import preflight, schedule

    for command in (lab, preflight, schedule, verify):
        main.add_command(command)


_attach_optional_groups()


def run() -> None:  # pragma: no cover
    main()


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["main", "InputError"]
