"""`swarm secrets | vault`: secrets in Vault (names and versions only, never values) and its bootstrap."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.common import (
    Context,
    fail,
    handle_errors,
    pass_ctx,
    phase_option,
    phases_of,
    project_options,
)


@click.group()
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
    from orchestrator.errors import InputError

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
@phase_option
@project_options
@pass_ctx
@handle_errors
def secrets_check(ctx: Context, phase: str | None) -> None:
    """Exit 1 listing the secrets the playbook needs that Vault does not hold."""
    from orchestrator.clients.secrets_source import SecretSource
    from orchestrator.render.services import build_services, secrets_of

    project = ctx.project()
    source = SecretSource.from_project(project)
    phases = phases_of(project, phase)
    services = [s for s in build_services(project) if phases is None or s.phase in phases]
    missing = source.missing(secrets_of(services))
    for name in missing:
        spec = source.declared[name]
        click.echo(f"missing: {name} ({source.mount}/{source.full_path(spec)} key {spec.key})")
    if missing:
        fail(f"{len(missing)} secret(s) missing in Vault: push them with `swarm secrets push --env-file FILE`", 1)
    click.echo("all secrets present")


@click.group()
def vault() -> None:
    """Bootstrap the fleet's Vault: initialise and unseal once, keys kept in a 0600 file."""


@vault.command("init")
@click.option("--key-file", required=True, help="where to keep unseal keys + root token (0600; keep it offline)")
@click.option("--token-file", help="where to write the deploy token (0600; default: the inventory's "
                                   "vault.token_file, else vault-token beside the key file)")
@click.option("--shares", type=int, default=1, show_default=True)
@click.option("--threshold", type=int, default=1, show_default=True)
@project_options
@pass_ctx
@handle_errors
def vault_init(ctx: Context, key_file: str, token_file: str | None, shares: int, threshold: int) -> None:
    """Initialise (if fresh) and unseal the inventory's Vault, mount KV v2, and make a deploy
    token limited to the fleet's secrets (the root token stays in the key file, offline)."""
    from orchestrator.clients.secrets_source import SecretSource
    from orchestrator.clients.vault import bootstrap, check_init_options, create_deploy_token

    key_path = check_init_options(key_file, shares, threshold)  # bad options: exit 2 before connecting
    project = ctx.project()
    source = SecretSource.from_project(project)
    addr, verify = source.addr, source.tls()["verify"]
    token_path = deploy_token_path(token_file, source.token_file, key_path)
    result = bootstrap(addr, key_file, shares=shares, threshold=threshold, kv_mount=source.mount,
                       verify=verify)  # type: ignore[arg-type]
    written, made = create_deploy_token(addr, key_file, token_path, mount=source.mount, path=source.base_path,
                                        fleet=project.inventory.fleet, verify=verify)  # type: ignore[arg-type]
    click.echo(f"Vault at {addr}: {'initialised and ' if result.initialized else ''}unsealed; keys in {key_file}")
    click.echo(f"deploy token ({'new' if made else 'kept'}, only {source.mount}/{source.base_path}/*) in {written}: "
               f"point vault.token_file at it and keep {key_file} offline")


def deploy_token_path(given: str | None, inventory_file: Path | None, key_file: Path) -> Path:
    """--token-file, else the inventory's vault.token_file (never the key file), else beside the keys."""
    from orchestrator.errors import InputError

    if given is not None:
        path = Path(given)
    elif inventory_file is not None and inventory_file.resolve() != key_file.resolve():
        path = inventory_file
    else:
        path = key_file.parent / "vault-token"
    if path.resolve() == key_file.resolve():
        raise InputError("--token-file: the deploy token cannot share the key file (that file goes offline)")
    return path


@vault.command("unseal")
@click.option("--key-file", type=click.Path(path_type=Path, exists=True), required=True)
@project_options
@pass_ctx
@handle_errors
def vault_unseal(ctx: Context, key_file: Path) -> None:
    """Unseal the inventory's Vault with the keys kept by `swarm vault init`."""
    from orchestrator.clients.secrets_source import SecretSource
    from orchestrator.clients.vault import unseal

    source = SecretSource.from_project(ctx.project())
    addr = source.addr
    status = unseal(addr, key_file, verify=source.tls()["verify"])  # type: ignore[arg-type]  # the inventory's CA
    click.echo(f"Vault at {addr}: {'sealed' if status.sealed else 'unsealed'}")


COMMANDS = (secrets, vault)
