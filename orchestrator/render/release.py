"""Releases: the content a node receives, its identity, and what a node says it runs.

A release is the node's rendered compose project + config files + env files (secret
values from Vault, mode 0600). Its id is UTC time + a short hash of the content, stamped
under the node's lock so ids strictly increase per node (`release_id`). The node keeps
`releases/<id>/release.json` with, per service, the hash of the definition that was
actually applied, and the same as `applied.txt` lines (`service hash`) that the run's
first command compares without parsing JSON — a no-op run compares those hashes and
nothing else.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.config.roles import secret_names
from orchestrator.errors import InputError
from orchestrator.render.fleet import NodeRender
from orchestrator.render.services import Service
from orchestrator.render.templates import render_string
from orchestrator.secrets import Secret, env_quote

RELEASE_FILE = "release.json"
APPLIED_FILE = "applied.txt"
ENV_MODE = 0o600
FILE_MODE = 0o644


# ---------------------------------------------------------------- env files


def env_file_body(svc: Service, secrets: dict[str, Secret]) -> bytes:
    """KEY=value lines for compose's env_file that compose reads back byte for byte.

    A value without `'`, `\\`, CR or LF is single-quoted (compose takes it literally, `$`
    included); any other is double-quoted with `\\`, `"`, `$`, LF and CR escaped. Both
    forms are proven against the real compose parser (tests/unit/render/test_env_roundtrip.py).
    A value compose cannot carry (a NUL or another control character) is refused naming the
    secret, never showing it.
    """
    lines = [f"# {svc.name}: written by swarm from Vault; mode 0600"]
    for env_name, ref in sorted(svc.secret_env.items()):
        value = _secret_value(svc, env_name, ref, secrets)
        bad = next((c for c in value if _unrepresentable(c)), None)
        if bad is not None:
            used = ", ".join(secret_names(ref))
            raise InputError(
                f"{svc.name}: {env_name} (from secret {used}) holds a control character "
                f"(U+{ord(bad):04X}) that an env file cannot carry: rotate the secret to a value without it")
        lines.append(f"{env_name}={env_quote(value)}")
    return ("\n".join(lines) + "\n").encode()


def _unrepresentable(char: str) -> bool:
    code = ord(char)
    return (code < 32 and char not in "\t\n\r") or code == 127 or 0xD800 <= code <= 0xDFFF


def _secret_value(svc: Service, env_name: str, ref: str, secrets: dict[str, Secret]) -> str:
    if "{{" not in ref:
        return _lookup(svc, env_name, ref, secrets).reveal()
    for name in secret_names(ref):
        _lookup(svc, env_name, name, secrets)
    context = {**svc.vars, "secrets": {k: v.reveal() for k, v in secrets.items()}}
    return render_string(ref, context, f"secret_env.{env_name} of {svc.name}", sensitive=True)


def _lookup(svc: Service, env_name: str, name: str, secrets: dict[str, Secret]) -> Secret:
    try:
        return secrets[name]
    except KeyError:
        raise InputError(f"{svc.name} needs secret {name!r} for {env_name}, which Vault does not hold: "
                         "push it with `swarm secrets push`") from None


# ---------------------------------------------------------------- content


@dataclass(frozen=True)
class ReleaseContent:
    node: str
    files: dict[str, bytes]          # relative to the release directory
    store: dict[str, bytes]          # relative to deploy_root (content-addressed configs)
    service_hashes: dict[str, str]
    hash: str
    modes: dict[str, int] = field(default_factory=dict)   # files/store paths with a role-set mode
    shapes: dict[str, str] = field(default_factory=dict)  # service -> shape_hash (reloadable ones)
    configs: dict[str, str] = field(default_factory=dict)  # service -> config_digest (reloadable ones)

    def mode(self, path: str) -> int:
        """The file's mode on the node: env files 0600, a template's own `mode`, else 0644."""
        return ENV_MODE if path.startswith("env/") else self.modes.get(path, FILE_MODE)

    def public_files(self) -> dict[str, bytes]:
        """Files safe to show (diff, check): everything but env files."""
        return {p: d for p, d in self.files.items() if not p.startswith("env/")}


def build_release(render: NodeRender, secrets: dict[str, Secret],
                  only: set[str] | None = None) -> ReleaseContent:
    """The release for a node; env files (and hashes) for the services in `only` (default: all).

    A phase deploy writes env files for its own services only; the node carries the other
    services' env files over from its current release (`commands.carry_env_files`).
    """
    files = dict(render.files)
    hashes: dict[str, str] = {}
    shapes: dict[str, str] = {}
    configs: dict[str, str] = {}
    for svc in render.services:
        if only is not None and svc.name not in only:
            continue
        env = env_file_body(svc, secrets) if svc.secret_env else b""
        if env:
            files[f"env/{svc.name}.env"] = env
        hashes[svc.name] = service_hash(svc, env)
        live = config_digest(svc)
        if live is not None:
            shapes[svc.name], configs[svc.name] = shape_hash(svc, env), live
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path] + b"\0")
    for path, mode in render.modes.items():  # a mode change is a change of the release
        if path in files:
            digest.update(f"{path}\0mode {mode:o}\0".encode())
    return ReleaseContent(node=render.node.name, files=dict(sorted(files.items())), store=render.store,
                          service_hashes=hashes, hash=digest.hexdigest(), modes=dict(render.modes),
                          shapes=shapes, configs=configs)


def service_hash(svc: Service, env: bytes) -> str:
    """What the service runs: its compose definition and env file — and, for a service that
    reloads its config in place (its compose definition mounts a fixed directory), the config."""
    shape = shape_hash(svc, env)
    digest = config_digest(svc)
    if digest is None:
        return shape
    return hashlib.sha256(f"{shape}\0config {digest}".encode()).hexdigest()[:16]


def shape_hash(svc: Service, env: bytes) -> str:
    """The compose definition and env file alone: equal between two releases whose only change
    for the service is its config files, which a reloadable service takes without a restart."""
    body = yaml.safe_dump(svc.compose, sort_keys=True).encode()
    return hashlib.sha256(body + b"\0" + hashlib.sha256(env).digest()).hexdigest()[:16]


def config_digest(svc: Service) -> str | None:
    """The config a reloadable service runs (its files' content address), else None."""
    digest = svc.vars.get("config_digest")
    return str(digest) if svc.rollout.reloads and digest else None


_STAMP = "%Y%m%dT%H%M%SZ"


def release_id(content_hash: str, existing: Iterable[str], now: float | None = None) -> str:
    """UTC time + short hash, strictly after every release the node already has.

    Stamped under the node's lock from the release list read under it, so two deploys
    can neither collide nor sort out of order; a clock behind the newest release (or a
    second release in the same second) moves the stamp one second past it.
    """
    stamp = time.gmtime(time.time() if now is None else now)
    newest = max((r for r in existing if _stamp_of(r) is not None), default=None)
    if newest is not None:
        last = _stamp_of(newest)
        assert last is not None
        if time.strftime(_STAMP, stamp) <= time.strftime(_STAMP, last):
            stamp = time.gmtime(calendar.timegm(last) + 1)
    return f"{time.strftime(_STAMP, stamp)}-{content_hash[:8]}"


def _stamp_of(release: str) -> time.struct_time | None:
    try:
        return time.strptime(release.split("-", 1)[0], _STAMP)
    except ValueError:
        return None


def manifest(content: ReleaseContent, *, release: str, phase: int, applied: dict[str, str],
             by: str, previous: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "id": release,
        "node": content.node,
        "hash": content.hash,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "phase": phase,
        "by": by,
        "previous": previous,
        "services": content.service_hashes,
        "applied": applied,
        **extra,
    }


def applied_lines(applied: dict[str, str]) -> bytes:
    """The applied map as `service hash` lines: what the run's first command greps."""
    return "".join(f"{name} {digest}\n" for name, digest in sorted(applied.items())).encode()


def tarball(content: ReleaseContent, release: str, release_json: dict[str, Any]) -> bytes:
    """One tar, extracted under releases/ (`commands.extract_release`): the release in
    `.tmp-<id>/` and the config-store directories it needs in `.tmp-<id>.store/`."""
    tmp = f".tmp-{release}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, tmp)
        for path, data in content.files.items():
            _add(tar, f"{tmp}/{path}", data, content.mode(path))
        _add(tar, f"{tmp}/{RELEASE_FILE}", json.dumps(release_json, indent=2).encode(), FILE_MODE)
        _add(tar, f"{tmp}/{APPLIED_FILE}", applied_lines(dict(release_json.get("applied", {}))),
             FILE_MODE)
        for path, data in content.store.items():
            _add(tar, f"{tmp}.store/{path.removeprefix('configs/')}", data, content.mode(path))
    return buf.getvalue()


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = int(time.time())
    tar.addfile(info)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))
