"""swarm's Vault client: secrets in KV v2, read as `Secret`s, written with check-and-set.

A `VaultClient` talks to one Vault (`addr`) with a token (`VAULT_TOKEN`) or an AppRole
login (role_id / secret_id from arguments, files or `VAULT_ROLE_ID` / `VAULT_SECRET_ID`).
Every failure becomes a `ServiceError` that names the address and says what to do:
sealed, not initialised, unreachable, permission denied, check-and-set conflict.
Secret values only ever live inside `Secret` objects and request bodies; they are
never part of an exception, a repr or a log line.

Also here: `parse_env_file` (dotenv syntax -> `Secret`s) and `bootstrap` / `unseal`,
the once-per-Vault initialisation an operator runs (the lab runs it automatically).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import hvac
import hvac.exceptions
import requests

from orchestrator.errors import InputError, ServiceError
from orchestrator.secrets import Secret, scrub

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
SEALED_HINT = (
    "unseal it with `vault operator unseal` or `swarm vault unseal --key-file FILE` (the keys "
    "`swarm vault init` kept), then re-run"
)


class CasConflict(ServiceError):
    """A KV v2 write lost a check-and-set race: the secret changed since it was read."""


@dataclass(frozen=True)
class VaultStatus:
    """What /v1/sys/health says about a Vault."""

    initialized: bool
    sealed: bool
    standby: bool
    version: str


@dataclass(frozen=True)
class SecretInfo:
    """One KV v2 secret as `swarm secrets list` shows it: names and versions, no values."""

    path: str
    version: int
    keys: tuple[str, ...]
    updated: str
    deleted: bool = False


@dataclass(frozen=True)
class PushResult:
    """What `VaultClient.push` did to one secret: key names only, never values."""

    path: str
    version: int
    changed: bool
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class BootstrapResult:
    """What `bootstrap` did; the key file holds the values, these objects mask them."""

    key_file: Path
    initialized: bool
    unseal_keys: tuple[Secret, ...]
    root_token: Secret


# --------------------------------------------------------------------------- errors


class _Translator:
    """Turns hvac / requests exceptions into ServiceErrors that say what to do."""

    def __init__(self, addr: str) -> None:
        self.addr = addr

    def fail(self, err: Exception, action: str, where: str = "") -> NoReturn:
        raise self.error(err, action, where) from None

    def error(self, err: Exception, action: str, where: str) -> ServiceError:
        target = f" {where}" if where else ""
        if isinstance(err, requests.exceptions.RequestException):
            return ServiceError(
                f"Vault at {self.addr} is unreachable ({type(err).__name__}) while trying to "
                f"{action}{target}",
                hint="check that Vault is running and that VAULT_ADDR / inventory vault.addr "
                "points at it",
            )
        if isinstance(err, hvac.exceptions.VaultDown):
            return ServiceError(f"Vault at {self.addr} is sealed", hint=SEALED_HINT)
        if isinstance(err, hvac.exceptions.VaultNotInitialized):
            return ServiceError(
                f"Vault at {self.addr} is not initialised",
                hint="initialise and unseal it once with `swarm vault init --key-file FILE` "
                "(or `vault operator init`)",
            )
        if isinstance(err, hvac.exceptions.Forbidden):
            return ServiceError(
                f"Vault at {self.addr}: the token lacks permission to {action}{target} "
                "(403 permission denied)",
                hint="check VAULT_TOKEN (or the AppRole's role_id/secret_id) and that its policy "
                f"grants this path{target}",
            )
        if isinstance(err, hvac.exceptions.InvalidRequest) and _is_cas_error(err):
            return CasConflict(
                f"Vault at {self.addr}: {where or 'the secret'} changed since you read it "
                "(check-and-set mismatch); nothing was written",
                hint="re-run to read the current version and push again",
            )
        return ServiceError(
            f"Vault at {self.addr}: {action}{target} failed: {_describe(err)}",
            hint="see the Vault server log for details",
        )


def _is_cas_error(err: hvac.exceptions.VaultError) -> bool:
    return any("check-and-set" in str(e) for e in (err.errors or []))


def _describe(err: Exception) -> str:
    if isinstance(err, hvac.exceptions.VaultError):
        errors = "; ".join(str(e) for e in (err.errors or [])) or "no details"
        return scrub(f"{type(err).__name__}: {errors}")
    return type(err).__name__


# --------------------------------------------------------------------------- client


class VaultClient:
    """An authenticated connection to one Vault; see `connect` for how auth is chosen."""

    def __init__(
        self, addr: str, token: Secret | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
        verify: bool | str = True, cert: tuple[str, str] | None = None,
    ) -> None:
        self.addr = addr.rstrip("/")
        self._errors = _Translator(self.addr)
        self._hvac = _hvac_client(self.addr, timeout, verify, cert)
        self._token = token
        if token is not None:
            self._hvac.token = token.reveal()
        self.auth_method = "token" if token is not None else "none"

    def __repr__(self) -> str:
        return f"VaultClient(addr={self.addr!r}, auth={self.auth_method})"

    # --- auth

    def login_approle(self, role_id: Secret, secret_id: Secret, mount: str = "approle") -> None:
        """Exchange role_id + secret_id for a token (POST auth/<mount>/login)."""
        try:
            result = self._hvac.auth.approle.login(
                role_id=role_id.reveal(), secret_id=secret_id.reveal(), mount_point=mount
            )
        except hvac.exceptions.InvalidRequest:
            raise ServiceError(
                f"Vault at {self.addr}: AppRole login failed (invalid role_id or secret_id)",
                hint="check VAULT_ROLE_ID / VAULT_SECRET_ID (or the files they come from); "
                "secret_ids can expire: generate a new one",
            ) from None
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as err:
            self._errors.fail(err, "log in with AppRole", f"auth/{mount}")
        self._token = Secret(result["auth"]["client_token"], "vault-token")
        self.auth_method = "approle"

    def check_token(self) -> dict[str, Any]:
        """Look the token up (auth/token/lookup-self): proves it is valid; returns policies etc."""
        self.require_unsealed()
        try:
            data = self._hvac.auth.token.lookup_self()["data"]
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as err:
            self._errors.fail(err, "look up its own token", "auth/token/lookup-self")
        data.pop("id", None)  # the token itself
        return dict(data)

    # --- status

    def status(self) -> VaultStatus:
        """GET /v1/sys/health with every state answered as 200 so the body is always read."""
        try:
            body = self._hvac.sys.read_health_status(
                method="GET", standby_ok=True, sealed_code=200, uninit_code=200
            )
        except requests.exceptions.RequestException as err:
            self._errors.fail(err, "read its health", "sys/health")
        if not isinstance(body, dict):
            raise ServiceError(
                f"Vault at {self.addr}: unexpected sys/health answer {body.status_code}"
            )
        return VaultStatus(
            initialized=bool(body.get("initialized")),
            sealed=bool(body.get("sealed")),
            standby=bool(body.get("standby")),
            version=str(body.get("version", "")),
        )

    def require_unsealed(self) -> VaultStatus:
        status = self.status()
        if not status.initialized:
            self._errors.fail(hvac.exceptions.VaultNotInitialized(), "use it")
        if status.sealed:
            self._errors.fail(hvac.exceptions.VaultDown(), "use it")
        return status

    # --- KV v2

    def read_secrets(self, mount: str, path: str) -> dict[str, Secret]:
        """The latest version of a KV v2 secret, every value wrapped in a `Secret`."""
        data = self._read_data(mount, path)
        if data is None:
            raise ServiceError(
                f"Vault at {self.addr}: no secret at {mount}/data/{path} (missing or deleted)",
                hint=f"push it with `swarm secrets push --mount {mount} --path {path} ...`",
            )
        return {key: Secret(_as_text(value), name=f"{path}:{key}") for key, value in data.items()}

    def _read_data(self, mount: str, path: str) -> dict[str, Any] | None:
        """The raw data of the latest version, None if missing or (soft) deleted."""
        try:
            result = self._hvac.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath as err:
            self._require_vault_404(err)
            return None
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as err:
            self._errors.fail(err, "read", f"{mount}/data/{path}")
        return dict(result["data"]["data"] or {})

    def write_secrets(
        self, mount: str, path: str, data: Mapping[str, Secret | str], cas: int | None = None
    ) -> int:
        """Write a new version; `cas` = the version you read (0: must not exist yet).

        Returns the new version. A concurrent change raises `CasConflict`.
        """
        where = f"{mount}/data/{path}"
        body = {key: _reveal(value) for key, value in data.items()}
        try:
            result = self._hvac.secrets.kv.v2.create_or_update_secret(
                path=path, secret=body, cas=cas, mount_point=mount
            )
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as err:
            self._errors.fail(err, "write", where)
        finally:
            body.clear()
        version = int(result["data"]["version"])
        log.info("vault: wrote %s version %d (%d keys)", where, version, len(data))
        return version

    def current_version(self, mount: str, path: str) -> int:
        """The secret's current version, 0 if it does not exist (the `cas` for a first write)."""
        meta = self._metadata(mount, path)
        return int(meta["current_version"]) if meta else 0

    def list_secrets(self, mount: str, path: str) -> list[SecretInfo]:
        """Every secret below `path` (recursively): name, version and key names, never values."""
        return sorted(self._walk(mount, path.strip("/")), key=lambda info: info.path)

    def missing(self, mount: str, required: Mapping[str, set[str]]) -> dict[str, set[str]]:
        """Keys that `required` (path -> key names) expects but Vault does not hold."""
        absent: dict[str, set[str]] = {}
        for path, keys in sorted(required.items()):
            present = set(self._keys(mount, path))
            lacking = set(keys) - present
            if lacking:
                absent[path] = lacking
        return absent

    def require_secrets(self, mount: str, required: Mapping[str, set[str]]) -> None:
        """Preflight for a deploy: raise one ServiceError naming every missing path/key."""
        absent = self.missing(mount, required)
        if absent:
            listed = "; ".join(f"{mount}/{p}: {', '.join(sorted(k))}" for p, k in absent.items())
            raise ServiceError(
                f"Vault at {self.addr} lacks secrets the deploy needs: {listed}",
                hint="push them with `swarm secrets push --env-file FILE`, then re-run",
            )

    def push(
        self, mount: str, path: str, values: Mapping[str, Secret | str], *, replace: bool = False
    ) -> PushResult:
        """Write `values` as a new version unless Vault already holds exactly that.

        Keys already in Vault but not in `values` are kept unless `replace`. The write is
        check-and-set against the version read here, so a concurrent change raises
        `CasConflict` instead of being overwritten. A soft-deleted latest version counts as
        empty (the push writes a new version on top of it).
        """
        version = self.current_version(mount, path)
        current = (self._read_data(mount, path) or {}) if version else {}
        wanted = {} if replace else {k: _as_text(v) for k, v in current.items()}
        wanted.update({key: _reveal(value) for key, value in values.items()})
        old = {k: _as_text(v) for k, v in current.items()}
        result = PushResult(
            path,
            version,
            changed=wanted != old,
            added=tuple(sorted(set(wanted) - set(old))),
            updated=tuple(sorted(k for k in set(wanted) & set(old) if wanted[k] != old[k])),
            removed=tuple(sorted(set(old) - set(wanted))),
        )
        if result.changed:
            new_version = self.write_secrets(mount, path, wanted, cas=version)
            result = dataclasses.replace(result, version=new_version)
        wanted.clear()
        current.clear()
        old.clear()
        return result

    # --- helpers

    def _require_vault_404(self, err: hvac.exceptions.InvalidPath) -> None:
        """Vault's 404s are JSON; a bare 404 comes from something else at that address."""
        if err.json is None:
            raise ServiceError(
                f"{self.addr} answered 404 without a JSON body: that is not Vault",
                hint="check VAULT_ADDR / inventory vault.addr (a proxy or another service "
                "answers there)",
            ) from None

    def _walk(self, mount: str, prefix: str) -> Iterator[SecretInfo]:
        for name in self._list(mount, prefix):
            child = f"{prefix}/{name}" if prefix else name
            if name.endswith("/"):
                yield from self._walk(mount, child.rstrip("/"))
            else:
                yield self._info(mount, child)

    def _list(self, mount: str, prefix: str) -> list[str]:
        try:
            result = self._hvac.secrets.kv.v2.list_secrets(path=prefix, mount_point=mount)
        except hvac.exceptions.InvalidPath as err:
            self._require_vault_404(err)
            return []
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as err:
            self._errors.fail(err, "list", f"{mount}/metadata/{prefix}")
        return [str(k) for k in result["data"]["keys"]]

    def _metadata(self, mount: str, path: str) -> dict[str, Any] | None:
        try:
            result = self._hvac.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)
        except hvac.exceptions.InvalidPath as err:
            self._require_vault_404(err)
            return None
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as err:
            self._errors.fail(err, "read metadata of", f"{mount}/metadata/{path}")
        return dict(result["data"])

    def _info(self, mount: str, path: str) -> SecretInfo:
        meta = self._metadata(mount, path) or {
            "current_version": 0,
            "updated_time": "",
            "versions": {},
        }
        version = int(meta["current_version"])
        latest = meta["versions"].get(str(version), {})
        deleted = bool(latest.get("deletion_time")) or bool(latest.get("destroyed"))
        keys = () if deleted else tuple(sorted(self._keys(mount, path)))
        return SecretInfo(path, version, keys, str(meta.get("updated_time", "")), deleted)

    def _keys(self, mount: str, path: str) -> list[str]:
        """Key names of the latest version; the values are dropped straight away."""
        return list(self._read_data(mount, path) or {})


def _hvac_client(addr: str, timeout: float, verify: bool | str = True,
                 cert: tuple[str, str] | None = None) -> hvac.Client:
    """hvac's client; TLS verified against `verify` (a CA file, or the system CAs)."""
    if isinstance(verify, str) and not Path(verify).is_file():
        raise InputError(f"vault.ca_cert: no CA certificate file {verify} (the CA that signed Vault's "
                         "certificate, on this machine)")
    return hvac.Client(url=addr.rstrip("/"), timeout=timeout, verify=verify, cert=cert)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _reveal(value: Secret | str) -> str:
    return value.reveal() if isinstance(value, Secret) else str(value)


# --------------------------------------------------------------------------- connecting


def connect(
    addr: str | None = None,
    *,
    token: Secret | str | None = None,
    role_id: Secret | str | None = None,
    secret_id: Secret | str | None = None,
    role_id_file: str | os.PathLike[str] | None = None,
    secret_id_file: str | os.PathLike[str] | None = None,
    approle_mount: str = "approle",
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    verify: bool | str = True,
    cert: tuple[str, str] | None = None,
) -> VaultClient:
    """An authenticated client. Auth, first match wins: `token`; AppRole from arguments or
    files; `VAULT_TOKEN`; AppRole from `VAULT_ROLE_ID` / `VAULT_SECRET_ID` (or their
    `_FILE` variants). The address defaults to `VAULT_ADDR`."""
    env = os.environ if env is None else env
    addr = addr or env.get("VAULT_ADDR")
    if not addr:
        raise InputError("no Vault address", hint="set VAULT_ADDR or vault.addr in the inventory")
    explicit_role = _approle_from(role_id, secret_id, role_id_file, secret_id_file)
    env_role = _approle_from(
        env.get("VAULT_ROLE_ID"),
        env.get("VAULT_SECRET_ID"),
        env.get("VAULT_ROLE_ID_FILE"),
        env.get("VAULT_SECRET_ID_FILE"),
    )
    tok = _as_secret(token, "vault-token") or _as_secret(env.get("VAULT_TOKEN"), "vault-token")
    if token is None and explicit_role is None and tok is None and env_role is None:
        raise InputError(
            f"no credentials for Vault at {addr}",
            hint="set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole",
        )
    if token is not None or (explicit_role is None and tok is not None):
        return VaultClient(addr, tok, timeout=timeout, verify=verify, cert=cert)
    client = VaultClient(addr, timeout=timeout, verify=verify, cert=cert)
    role = explicit_role or env_role
    assert role is not None
    client.login_approle(*role, mount=approle_mount)
    return client


def _as_secret(value: Secret | str | None, name: str) -> Secret | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, Secret) else Secret(value, name)


def _approle_from(
    role_id: Secret | str | None,
    secret_id: Secret | str | None,
    role_id_file: str | os.PathLike[str] | None,
    secret_id_file: str | os.PathLike[str] | None,
) -> tuple[Secret, Secret] | None:
    rid = _as_secret(role_id, "vault-role-id") or _read_cred_file(role_id_file, "vault-role-id")
    sid = _as_secret(secret_id, "vault-secret-id") or _read_cred_file(
        secret_id_file, "vault-secret-id"
    )
    if rid is None and sid is None:
        return None
    if rid is None or sid is None:
        raise InputError(
            "AppRole needs both a role_id and a secret_id",
            hint="set both VAULT_ROLE_ID and VAULT_SECRET_ID (or their files)",
        )
    return rid, sid


def _read_cred_file(path: str | os.PathLike[str] | None, name: str) -> Secret | None:
    if not path:
        return None
    from orchestrator.clients.secrets_source import require_private

    require_private(Path(path), name)
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise InputError(f"cannot read {name} file: {err.strerror}", file=str(path)) from None
    if not text:
        raise InputError(f"{name} file is empty", file=str(path))
    return Secret(text, name)


# --------------------------------------------------------------------------- env files

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(path: str | os.PathLike[str]) -> dict[str, Secret]:
    """KEY=VALUE pairs of a dotenv file as `Secret`s.

    Supports blank lines, `# comments`, `export KEY=...`, unquoted values with trailing
    ` # comments`, 'single quotes' (literal) and "double quotes" (escapes, may span
    lines). Errors name the file and line, never the line's content.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read env file: {err.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise InputError("env file is not UTF-8 text", file=str(path)) from None
    return {k: Secret(v, name=k) for k, v in _parse_env_text(text, str(path)).items()}


def _parse_env_text(text: str, source: str) -> dict[str, str]:
    values: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line_no = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].strip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise InputError(f"line {line_no}: expected KEY=VALUE", file=source)
        rest = rest.lstrip()
        if rest[:1] == '"':
            value, i = _double_quoted(rest[1:], lines, i, line_no, source)
        elif rest[:1] == "'":
            value = _single_quoted(rest[1:], line_no, source)
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        values[key] = value
    return values


def _single_quoted(rest: str, line_no: int, source: str) -> str:
    end = rest.find("'")
    if end < 0:
        raise InputError(f"line {line_no}: unterminated single-quoted value", file=source)
    _require_comment_only(rest[end + 1 :], line_no, source)
    return rest[:end]


def _double_quoted(
    rest: str, lines: list[str], i: int, line_no: int, source: str
) -> tuple[str, int]:
    out: list[str] = []
    while True:
        j = 0
        while j < len(rest):
            ch = rest[j]
            if ch == "\\" and j + 1 < len(rest):
                nxt = rest[j + 1]
                out.append(_ESCAPES.get(nxt, "\\" + nxt))
                j += 2
                continue
            if ch == '"':
                _require_comment_only(rest[j + 1 :], line_no, source)
                return "".join(out), i
            out.append(ch)
            j += 1
        if i >= len(lines):
            raise InputError(f"line {line_no}: unterminated double-quoted value", file=source)
        out.append("\n")
        rest = lines[i]
        i += 1


def _require_comment_only(tail: str, line_no: int, source: str) -> None:
    tail = tail.strip()
    if tail and not tail.startswith("#"):
        raise InputError(f"line {line_no}: unexpected text after the closing quote", file=source)


# --------------------------------------------------------------------------- bootstrap


def bootstrap(
    addr: str,
    key_file: str | os.PathLike[str],
    *,
    shares: int = 1,
    threshold: int = 1,
    kv_mount: str = "secret",
    enable_approle: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    verify: bool | str = True,
) -> BootstrapResult:
    """Initialise + unseal a fresh Vault once; keys and root token go to `key_file` (0600).

    The file has the shape of `vault operator init -format=json`. On an already
    initialised Vault the keys are read back from `key_file` and only the unseal
    happens. Afterwards a KV v2 engine is mounted at `kv_mount` if missing (and AppRole
    enabled at `approle/` when asked).
    """
    path = Path(key_file)
    check_init_options(path, shares, threshold)
    client = _hvac_client(addr, timeout, verify)
    errors = _Translator(addr.rstrip("/"))
    try:
        fresh = not client.sys.is_initialized()
        keys = _init_vault(client, path, shares, threshold) if fresh else _read_key_file(path, addr)
        if client.sys.is_sealed():
            client.sys.submit_unseal_keys([k.reveal() for k in keys["unseal_keys"]])
        client.token = keys["root_token"].reveal()
        _ensure_engines(client, kv_mount, enable_approle)
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as err:
        errors.fail(err, "bootstrap")
    if client.sys.is_sealed():
        raise ServiceError(
            f"Vault at {addr} is still sealed after submitting the keys in {path}",
            hint="the key file may belong to another Vault; unseal with `vault operator unseal`",
        )
    log.info("vault: bootstrap of %s done (initialised now: %s)", addr, fresh)
    return BootstrapResult(path, fresh, tuple(keys["unseal_keys"]), keys["root_token"])


def check_init_options(key_file: str | os.PathLike[str], shares: int, threshold: int) -> Path:
    """What `vault operator init` would refuse, said before anything connects; the key file's path."""
    if not 1 <= shares <= 255:
        raise InputError(f"--shares: Vault splits its key into 1 to 255 shares, got {shares}")
    if not 1 <= threshold <= shares:
        raise InputError(f"--threshold: between 1 and --shares ({shares}) keys unseal Vault, got {threshold}")
    if shares > 1 and threshold == 1:
        raise InputError("--threshold 1 with several shares: any one key unseals Vault; use --shares 1 "
                         "or a threshold of at least 2")
    text = str(key_file)
    if not text.strip() or any(ord(c) < 32 for c in text):
        raise InputError(f"--key-file: expected a file path, got {text!r}")
    path = Path(text)
    if path.is_dir():
        raise InputError(f"--key-file: {path} is a directory; name the file to keep the keys in")
    return path


def unseal(
    addr: str, key_file: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT_S,
    verify: bool | str = True,
) -> VaultStatus:
    """Submit the unseal keys kept in `key_file`; returns the status afterwards."""
    client = _hvac_client(addr, timeout, verify)
    keys = _read_key_file(Path(key_file), addr)
    try:
        client.sys.submit_unseal_keys([k.reveal() for k in keys["unseal_keys"]])
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as err:
        _Translator(addr).fail(err, "unseal")
    return VaultClient(addr, timeout=timeout, verify=verify).status()


def _init_vault(client: hvac.Client, path: Path, shares: int, threshold: int) -> dict[str, Any]:
    """Initialise Vault; the key file is created (0600) *before*, so keys are never lost to
    an unwritable path, and removed again if the initialisation fails."""
    fd = _create_private(path)
    try:
        result = client.sys.initialize(secret_shares=shares, secret_threshold=threshold)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    document = {
        "unseal_keys_b64": result["keys_base64"],
        "unseal_keys_hex": result["keys"],
        "unseal_shares": shares,
        "unseal_threshold": threshold,
        "recovery_keys_b64": [],
        "recovery_keys_hex": [],
        "recovery_keys_shares": 0,
        "recovery_keys_threshold": 0,
        "root_token": result["root_token"],
    }
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(document, indent=2) + "\n")
    return {
        "unseal_keys": [Secret(k, "vault-unseal-key") for k in result["keys"]][:threshold],
        "root_token": Secret(result["root_token"], "vault-root-token"),
    }


def _create_private(path: Path) -> int:
    """Create `path` with mode 0600 from the start; refuse to overwrite an existing file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        if isinstance(err, FileExistsError) and path.parent.is_dir():
            raise ServiceError(
                f"refusing to overwrite {path}: it may hold the keys of another Vault",
                hint="move it away or name another key file",
            ) from None
        raise InputError(
            f"cannot create the Vault key file: {err.strerror}; Vault was left uninitialised",
            file=str(path),
        ) from None


def _read_key_file(path: Path, addr: str) -> dict[str, Any]:
    if path.exists():
        from orchestrator.clients.secrets_source import require_private

        require_private(path, "Vault key")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        keys = doc.get("unseal_keys_hex") or doc["unseal_keys_b64"]
        threshold = int(doc.get("unseal_threshold") or len(keys))
        root = doc["root_token"]
    except FileNotFoundError:
        raise ServiceError(
            f"Vault at {addr} is already initialised and {path} does not exist",
            hint="unseal it with the keys kept at its initialisation (`vault operator unseal`)",
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            "not a Vault key file (expected `vault operator init -format=json` output)",
            file=str(path),
        ) from None
    return {
        "unseal_keys": [Secret(str(k), "vault-unseal-key") for k in keys][:threshold],
        "root_token": Secret(str(root), "vault-root-token"),
    }


def _ensure_engines(client: hvac.Client, kv_mount: str, enable_approle: bool) -> None:
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if f"{kv_mount}/" not in mounts:
        client.sys.enable_secrets_engine("kv", path=kv_mount, options={"version": "2"})
    if enable_approle and "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle")


# --------------------------------------------------------------------------- the deploy token

DEPLOY_TOKEN_PERIOD = "768h"


def deploy_policy(mount: str, path: str) -> str:
    """What a deploy (and `swarm secrets push|list|check`) needs, and nothing else: the fleet's
    own KV v2 paths. No sys/, no auth/, no other secret of the Vault."""
    base = path.strip("/")
    return "\n".join([
        f'path "{mount}/data/{base}/*" {{ capabilities = ["create", "read", "update"] }}',
        f'path "{mount}/metadata/{base}/*" {{ capabilities = ["read", "list"] }}',
        f'path "{mount}/metadata/{base}" {{ capabilities = ["list"] }}',
        "",
    ])


def create_deploy_token(addr: str, key_file: str | os.PathLike[str], token_file: str | os.PathLike[str], *,
                        mount: str, path: str, fleet: str, timeout: float = DEFAULT_TIMEOUT_S,
                        verify: bool | str = True) -> tuple[Path, bool]:
    """A token limited to `deploy_policy`, written to `token_file` (0600) with the root token
    of `key_file`; (the file, whether a new token was made). A token file that already holds a
    valid token is kept. The root token can then go offline: deploys never need it."""
    target = Path(token_file)
    client = _hvac_client(addr, timeout, verify)
    errors = _Translator(addr.rstrip("/"))
    if target.exists() and _token_is_valid(client, target):
        return target, False
    client.token = _read_key_file(Path(key_file), addr)["root_token"].reveal()
    name = f"swarm-deploy-{fleet}"
    try:
        client.sys.create_or_update_policy(name=name, policy=deploy_policy(mount, path))
        created = client.auth.token.create(policies=[name], no_parent=True, period=DEPLOY_TOKEN_PERIOD,
                                           display_name=name, renewable=True)
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as err:
        errors.fail(err, "create the deploy token", f"sys/policies/acl/{name}")
    token = Secret(created["auth"]["client_token"], "vault-deploy-token")
    target.unlink(missing_ok=True)
    fd = _create_private(target)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token.reveal() + "\n")
    return target, True


def _token_is_valid(client: hvac.Client, path: Path) -> bool:
    from orchestrator.clients.secrets_source import read_token_file

    client.token = read_token_file(path).reveal()
    try:
        client.auth.token.lookup_self()
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
        return False
    return True
