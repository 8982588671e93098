"""The one way swarm reads secret values from Vault, and the one rule for the token it sends.

Where: a `VaultAccess`, the inventory's `vault:` block (address, KV v2 mount, token file,
CA, client certificate). Which token, first match wins (docs/vault.md):

1. the inventory's `vault.token_file`, when the file exists: the token, or the JSON that
   `swarm vault init` wrote (its `root_token`); refused when the group or others may read it;
2. `VAULT_TOKEN`;
3. AppRole: `VAULT_ROLE_ID` and `VAULT_SECRET_ID` (or `VAULT_ROLE_ID_FILE` /
   `VAULT_SECRET_ID_FILE`, private files), exchanged for a token at `auth/approle/login`;

and nothing else: not `~/.vault-token` (hvac's habit), not `VAULT_ADDR` (the inventory
says where Vault is). No credentials at all is bad input (exit 2), saying what to set.

`KvReader.read_many(paths)` reads KV v2 paths, one GET each, all at once (threads), as
`Secret`s. Every deploy, rollback, restore, verify and the no-op check read through it;
`VaultClient` (hvac) reads through it too, and does the admin work (writes, listing,
bootstrap). Failures say what to do: sealed, not initialised, unreachable, permission
denied, no such secret, or something at the address that is not Vault.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.clients.http import Tls, request
from orchestrator.errors import InputError, ServiceError
from orchestrator.secrets import Secret, scrub

TOKEN_FILE_LIMIT = 64 * 1024
SEALED_HINT = (
    "unseal it with `vault operator unseal` or `swarm vault unseal --key-file FILE` (the keys "
    "`swarm vault init` kept), then re-run"
)
UNREACHABLE_HINT = "check that Vault is running and that VAULT_ADDR / inventory vault.addr points at it"


@dataclass(frozen=True)
class VaultAccess:
    """Where the fleet's Vault is and how to talk to it (the inventory's `vault:` block)."""

    addr: str
    mount: str = "secret"
    token_file: Path | None = None
    tls: Tls = Tls()


@dataclass(frozen=True)
class AppRole:
    role_id: Secret
    secret_id: Secret
    mount: str = "approle"


# --------------------------------------------------------------------------- credential files


def require_private(path: Path, what: str) -> None:
    """Refuse a credential file that the group or others can read (or write)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"the {what} file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise InputError(
            f"the {what} file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): "
            "anyone on this machine could use it",
            hint=f"chmod 600 {shlex.quote(str(path))}")


def read_private(path: Path, what: str) -> str:
    """A private credential file's text, stripped (at most 64 KiB; empty is refused)."""
    require_private(path, what)
    try:
        with path.open("rb") as fh:
            data = fh.read(TOKEN_FILE_LIMIT + 1)
    except OSError as exc:
        raise InputError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if len(data) > TOKEN_FILE_LIMIT:
        raise InputError(f"the {what} file {path} is larger than {TOKEN_FILE_LIMIT // 1024} KiB: not a token")
    text = data.decode("utf-8", "replace").strip()
    if not text:
        raise InputError(f"the {what} file {path} is empty")
    return text


def read_token_file(path: Path, what: str = "Vault token") -> Secret:
    """A token file holds the token, or the JSON `swarm vault init` wrote (its root_token)."""
    text = read_private(path, what)
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["root_token"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path} is JSON without a root_token") from None
    return Secret(text, "vault-token")


# --------------------------------------------------------------------------- the token rule


def credentials(token_file: Path | None, env: Mapping[str, str] | None = None) -> Secret | AppRole:
    """The token (or the AppRole to log in with) for Vault, by the rule in the module docstring."""
    env = os.environ if env is None else env
    if token_file is not None and token_file.exists():
        return read_token_file(token_file)
    if env.get("VAULT_TOKEN"):
        return Secret(env["VAULT_TOKEN"], "vault-token")
    role = approle(env.get("VAULT_ROLE_ID"), env.get("VAULT_SECRET_ID"),
                   env.get("VAULT_ROLE_ID_FILE"), env.get("VAULT_SECRET_ID_FILE"))
    if role is not None:
        return role
    where = f"inventory vault.token_file ({token_file}, not there), " if token_file else ""
    raise InputError("no credentials for Vault",
                     hint=f"set {where}VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole")


def approle(role_id: Secret | str | None, secret_id: Secret | str | None,
            role_id_file: str | os.PathLike[str] | None = None,
            secret_id_file: str | os.PathLike[str] | None = None) -> AppRole | None:
    """An AppRole from values or private files; None when neither half is given."""
    rid = _secret(role_id, "vault-role-id") or _from_file(role_id_file, "vault-role-id")
    sid = _secret(secret_id, "vault-secret-id") or _from_file(secret_id_file, "vault-secret-id")
    if rid is None and sid is None:
        return None
    if rid is None or sid is None:
        raise InputError("AppRole needs both a role_id and a secret_id",
                         hint="set both VAULT_ROLE_ID and VAULT_SECRET_ID (or their files)")
    return AppRole(rid, sid)


def _secret(value: Secret | str | None, name: str) -> Secret | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, Secret) else Secret(value, name)


def _from_file(path: str | os.PathLike[str] | None, name: str) -> Secret | None:
    return Secret(read_private(Path(path), name), name) if path else None


def token_for(access: VaultAccess, env: Mapping[str, str] | None = None, timeout: float = 10.0) -> Secret:
    """The token to send, logging in with AppRole when that is what the rule found."""
    found = credentials(access.token_file, env)
    return found if isinstance(found, Secret) else login(access, found, timeout)


def login(access: VaultAccess, role: AppRole, timeout: float = 10.0) -> Secret:
    """Exchange an AppRole's role_id + secret_id for a token (POST auth/<mount>/login)."""
    where = f"auth/{role.mount}/login"
    body = {"role_id": role.role_id.reveal(), "secret_id": role.secret_id.reveal()}
    try:
        answer = request("POST", access.addr, f"/v1/{where}", body=body, tls=access.tls, timeout=timeout)
    except OSError as exc:
        raise unreachable(access.addr, exc, "log in with AppRole", where) from None
    finally:
        body.clear()
    if answer.status in (400, 403):
        raise ServiceError(f"Vault at {access.addr}: AppRole login failed (invalid role_id or secret_id)",
                           hint="check VAULT_ROLE_ID / VAULT_SECRET_ID (or the files they come from); "
                                "secret_ids can expire: generate a new one")
    data = answer.json() if answer.status == 200 else None
    token = data.get("auth", {}).get("client_token") if isinstance(data, dict) else None
    if not token:
        raise answer_error(access.addr, answer.status, answer.json(), "log in with AppRole", where)
    return Secret(str(token), "vault-token")


# --------------------------------------------------------------------------- reading


class KvReader:
    """Reads KV v2 secrets from one Vault with one token."""

    def __init__(self, access: VaultAccess, token: Secret, *, timeout: float = 10.0) -> None:
        self.access, self._token, self.timeout = access, token, timeout

    def __repr__(self) -> str:
        return f"KvReader(addr={self.access.addr!r})"

    def read(self, path: str) -> dict[str, Secret] | None:
        """The latest version of a secret, each value a `Secret`; None when missing or deleted."""
        where = f"{self.access.mount}/data/{path}"
        try:
            answer = request("GET", self.access.addr, f"/v1/{where}", tls=self.access.tls,
                             headers={"X-Vault-Token": self._token.reveal()}, timeout=self.timeout)
        except OSError as exc:
            raise unreachable(self.access.addr, exc, "read", where) from None
        data = answer.json()
        if answer.status == 404 and isinstance(data, dict):
            return None  # no such secret, or its latest version is deleted (Vault answers JSON)
        if answer.status == 404:
            raise not_vault(self.access.addr)
        if answer.status == 503:
            raise self._unavailable()
        if answer.status != 200 or not isinstance(data, dict):
            raise answer_error(self.access.addr, answer.status, data, "read", where)
        values = (data.get("data") or {}).get("data") or {}
        return {str(k): Secret(_text(v), f"{path}:{k}") for k, v in values.items()}

    def _unavailable(self) -> ServiceError:
        """A 503: sealed, or never initialised (sys/health tells which)."""
        try:
            health = request("GET", self.access.addr, "/v1/sys/health?standbyok=true&sealedcode=200&uninitcode=200",
                             tls=self.access.tls, timeout=self.timeout).json()
        except OSError:
            health = None
        if isinstance(health, dict) and health.get("initialized") is False:
            return not_initialised(self.access.addr)
        return sealed(self.access.addr)

    def read_many(self, paths: Iterable[str]) -> dict[str, dict[str, Secret] | None]:
        """Every path, one request each, all at once."""
        unique = sorted(set(paths))
        if len(unique) <= 1:
            return {p: self.read(p) for p in unique}
        with ThreadPoolExecutor(max_workers=min(8, len(unique)), thread_name_prefix="vault") as pool:
            return dict(zip(unique, pool.map(self.read, unique), strict=True))

    def require(self, path: str) -> dict[str, Secret]:
        found = self.read(path)
        if found is None:
            raise missing(self.access.addr, self.access.mount, path)
        return found


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- what failures say


def unreachable(addr: str, err: BaseException, action: str, where: str = "") -> ServiceError:
    target = f" {where}" if where else ""
    return ServiceError(f"Vault at {addr} is unreachable ({type(err).__name__}) while trying to {action}{target}",
                        hint=UNREACHABLE_HINT)


def sealed(addr: str) -> ServiceError:
    return ServiceError(f"Vault at {addr} is sealed", hint=SEALED_HINT)


def not_initialised(addr: str) -> ServiceError:
    return ServiceError(f"Vault at {addr} is not initialised",
                        hint="initialise and unseal it once with `swarm vault init --key-file FILE` "
                             "(or `vault operator init`)")


def forbidden(addr: str, action: str, where: str = "") -> ServiceError:
    target = f" {where}" if where else ""
    return ServiceError(f"Vault at {addr}: the token lacks permission to {action}{target} (403 permission denied)",
                        hint="check VAULT_TOKEN (or the AppRole's role_id/secret_id) and that its policy "
                             f"grants this path{target}")


def not_vault(addr: str) -> ServiceError:
    return ServiceError(f"{addr} answered 404 without a JSON body: that is not Vault",
                        hint="check VAULT_ADDR / inventory vault.addr (a proxy or another service answers there)")


def missing(addr: str, mount: str, path: str) -> ServiceError:
    return ServiceError(f"Vault at {addr}: no secret at {mount}/data/{path} (missing or deleted)",
                        hint=f"push it with `swarm secrets push --mount {mount} --path {path} ...`")


def answer_error(addr: str, status: int, data: Any, action: str, where: str) -> ServiceError:
    """A non-success answer, worded by what Vault's status code means."""
    if status == 503:
        return sealed(addr)
    if status == 501:
        return not_initialised(addr)
    if status == 403:
        return forbidden(addr, action, where)
    errors = data.get("errors") if isinstance(data, dict) else None
    detail = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else f"HTTP {status}"
    return ServiceError(f"Vault at {addr}: {action} {where} failed: {scrub(detail)}",
                        hint="see the Vault server log for details")
