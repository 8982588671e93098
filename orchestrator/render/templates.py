"""Jinja for roles: one sandboxed, strict environment for every string and template file.

Every inventory, playbook and role value may hold Jinja, and every one of them is rendered
on the controller — the machine that holds the SSH key and the Vault token. So templates
run in Jinja's immutable sandbox (no attribute starting with `_`, no mutation of lists or
dicts, no `lipsum`/`cycler`/`joiner`/`namespace`), with budgets on what a template can make
the controller do (steps, items, sizes, numbers, CPU: render/sandbox.py), and write values
through the escaping of the file's format (`FORMAT_FILTERS`). An escape attempt or a runtime error (`1 // 0`, an unknown filter,
a missing include, a macro that never returns, bytes that are not UTF-8) is an InputError
naming the file and line (a template file) or the file, line and key (a value in YAML).

Template files are read through `RoleLoader`: only regular files inside the role's
directory, bounded in size, UTF-8.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import Undefined
from jinja2.exceptions import SecurityError

from orchestrator.addresses import host_port, url_host
from orchestrator.config.models import is_ip, relative_path_problem
from orchestrator.config.roles import Role
from orchestrator.config.yamlfile import decode_utf8, format_loc, read_bounded
from orchestrator.errors import InputError
from orchestrator.render.sandbox import MAX_TEXT, Sandbox, render_budget
from orchestrator.secrets import scrub
from orchestrator.text import printable

MAX_OUTPUT = MAX_TEXT               # characters one template may produce
MAX_TEMPLATE_BYTES = 1024 * 1024

Where = str | Callable[[tuple[str | int, ...]], str]


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------- escaping, per format
#
# A template writes a value through the filter of the file's format, so that whatever the value
# holds it stays one value there and never starts a directive of its own. Settings are checked
# against their type before (config/settings.py); the filters are the second wall, and they
# refuse (a template error naming the file and line) what their format has no way to write.

_YAML_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029", "\ufeff": "\\ufeff"}


def _yaml_value(value: Any) -> str:
    """A YAML scalar (JSON syntax, which YAML 1.1 and 1.2 read alike): strings double-quoted
    with escapes, so `0443`, `yes`, `- x` or `a: b` stay the text they are."""
    if isinstance(value, Undefined):
        raise SecurityError("an undefined value cannot be written into YAML")
    text = json.dumps(value, ensure_ascii=False)
    for char, escaped in _YAML_LINE_BREAKS.items():   # line breaks to a YAML 1.1 reader
        text = text.replace(char, escaped)
    return text


_HCL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hcl_string(value: Any) -> str:
    """An HCL quoted string (Consul's and Vault's config files)."""
    text = _scalar_text(value, "HCL")
    if "${" in text or "%{" in text:  # interpolation in HCL2, and escaped differently by HCL1
        raise SecurityError(f"{_shown(text)} holds `${{` or `%{{`, which HCL would interpolate")
    out = "".join(_HCL_ESCAPES.get(c, c if c.isprintable() else f"\\u{ord(c):04x}") for c in text)
    return f'"{out}"'


_REDIS_BARE = re.compile(r"[A-Za-z0-9_.:/@+,=-]+")


def _redis_arg(value: Any) -> str:
    """One argument of a redis.conf directive: bare when it is one plain word, else in double
    quotes with `\\`, `"` and non-printable characters escaped (Redis' sdssplitargs)."""
    text = _scalar_text(value, "redis.conf")
    if _REDIS_BARE.fullmatch(text):
        return text
    out = "".join(c if c.isprintable() and c not in '\\"' else
                  ("\\" + c if c in '\\"' else "".join(f"\\x{b:02x}" for b in c.encode())) for c in text)
    return f'"{out}"'


_HAPROXY_BARE = re.compile(r"[A-Za-z0-9_.:/\[\]-]+")


def _haproxy_arg(value: Any) -> str:
    """One HAProxy word in strong (single) quotes: no `$VAR` expansion, `#` and spaces literal;
    a `'` is closed, escaped and reopened (`'a'\\''b'`), as HAProxy's parser reads it."""
    text = _scalar_text(value, "haproxy.cfg")
    if _HAPROXY_BARE.fullmatch(text):  # one plain word (a number, a host:port) needs no quotes
        return text
    if any(not c.isprintable() for c in text):
        raise SecurityError(f"{_shown(text)} holds a character haproxy.cfg cannot carry")
    return "'" + text.replace("'", "'\\''") + "'"


_TOKEN = re.compile(r"[A-Za-z0-9_.:/-]+")


def _config_token(value: Any) -> str:
    """A word written bare (a pg_hba address, a host): refused unless it is one plain token."""
    text = _scalar_text(value, "this file")
    if not _TOKEN.fullmatch(text):
        raise SecurityError(f"{_shown(text)} is not one plain word (letters, digits, '_.:/-')")
    return text


def _url_host(value: Any) -> str:
    """A host as a URL or `host:port` writes it: an IPv6 address in brackets."""
    return url_host(_scalar_text(value, "a URL"))


def _host_port(value: Any, port: Any) -> str:
    return host_port(_scalar_text(value, "a URL"), _scalar_text(port, "a URL"))


def _scalar_text(value: Any, where: str) -> str:
    if isinstance(value, Undefined) or isinstance(value, dict | list | tuple) or value is None:
        raise SecurityError(f"{type(value).__name__} cannot be written into {where}: give a text or a number")
    return "true" if value is True else "false" if value is False else str(value)


def _shown(text: str) -> str:
    return '"' + printable(text[:60]) + ('..."' if len(text) > 60 else '"')


def _is_ip(value: Any) -> bool:
    return isinstance(value, str) and is_ip(value)


FORMAT_FILTERS: dict[str, Callable[..., str]] = {
    "yaml": _yaml_value, "hcl": _hcl_string, "redis": _redis_arg, "haproxy": _haproxy_arg,
    "quote_haproxy": _haproxy_arg, "token": _config_token, "urlhost": _url_host, "hostport": _host_port,
}
"""The escaping filters every role template may use (docs/validation.md)."""


def jinja_env(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    env = Sandbox(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - config files, not HTML
        loader=loader,
    )
    env.filters["to_yaml"] = _to_yaml
    env.filters.update(FORMAT_FILTERS)
    env.tests["ip"] = _is_ip
    env.guard_filters()
    return env


class RoleLoader(jinja2.BaseLoader):
    """Templates (and their includes) from one role directory: regular files inside it only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        if relative_path_problem(template):
            raise jinja2.TemplateNotFound(template)
        path = self.root / template
        try:
            inside = path.resolve().is_relative_to(self.root.resolve())
        except OSError:
            inside = False
        if not inside or not path.is_file():
            raise jinja2.TemplateNotFound(template)
        source = decode_utf8(read_bounded(path, "template", MAX_TEMPLATE_BYTES), path, "template")
        stamp = _mtime(path)
        return source, str(path), lambda: _mtime(path) == stamp


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def role_env(role: Role) -> jinja2.Environment:
    return _role_env(role.dir)


@lru_cache(maxsize=64)
def _role_env(directory: Path) -> jinja2.Environment:
    return jinja_env(RoleLoader(directory))


_STRING_ENV = jinja_env()


@lru_cache(maxsize=4096)
def _compiled(text: str) -> jinja2.Template:
    return _STRING_ENV.from_string(text)


def _render(template: jinja2.Template, context: dict[str, Any]) -> str:
    with render_budget():
        return _collect(template.generate(context))


def _collect(chunks: Iterator[str]) -> str:
    """The output, refused as soon as it grows past MAX_OUTPUT (not once it is all made)."""
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise SecurityError(f"the template writes more than {MAX_OUTPUT} characters")
        out.append(chunk)
    return "".join(out)


def describe(exc: BaseException, *, sensitive: bool = False) -> str:
    """What went wrong in a template, without the values it was working on when `sensitive`."""
    if isinstance(exc, SecurityError):
        return f"template refused by the sandbox: {exc}"
    if sensitive:  # the context holds secret values: say what kind of error, nothing it saw
        kind = "an undefined name or key" if isinstance(exc, jinja2.UndefinedError) else type(exc).__name__
        return f"template error: {kind} (check the secrets.<name> it uses)"
    if isinstance(exc, jinja2.UndefinedError):
        return scrub(str(exc.message))
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"template not found: {exc.name}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"template syntax error: {exc.message}"
    if isinstance(exc, RecursionError):
        return "template error: recursion too deep (a macro or include that never ends?)"
    if isinstance(exc, MemoryError):
        return "template error: out of memory"
    return scrub(f"template error: {type(exc).__name__}: {exc}"[:300])


def render_string(text: str, context: dict[str, Any], where: str, *, sensitive: bool = False) -> str:
    """Render one YAML string value; errors name `where` (file:line: key) and never the context."""
    try:
        return _render(_compiled(text), context)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a template is user code: anything it raises is bad input
        shown = "" if sensitive else f" (in {_short(text)!r})"
        raise InputError(f"{describe(exc, sensitive=sensitive)}{shown}", file=where) from None


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def render_value(value: Any, context: dict[str, Any], where: Where, loc: tuple[str | int, ...] = ()) -> Any:
    """Render every string inside `value`; a string that is only one expression keeps its type.

    `where` is the file (a string) or a function from a key path to `file:line`, so an error
    names the line of the very value that failed.
    """
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        out = render_string(value, context, _where(where, loc))
        return _native(out) if _is_single_expr(value) else out
    if isinstance(value, dict):
        return {k: render_value(v, context, where, loc + (k,)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, context, where, loc + (i,)) for i, v in enumerate(value)]
    return value


def _where(where: Where, loc: Sequence[str | int]) -> str:
    if callable(where):
        file = where(tuple(loc))
    else:
        file = where
    return f"{file}: {format_loc(loc)}" if loc else file


def _is_single_expr(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1


_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_PLAIN_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})\.[0-9]{1,17}")


def _native(text: str) -> Any:
    """A one-expression value that rendered a plain decimal number is that number; anything
    else stays text (never YAML 1.1's reading: "0443" is not octal 291, "1_000" not 1000)."""
    stripped = text.strip()
    if _PLAIN_INT.fullmatch(stripped):
        return int(stripped)
    if _PLAIN_FLOAT.fullmatch(stripped):
        return float(stripped)
    return text


def render_template(env: jinja2.Environment, role: Role, src: str, ctx: dict[str, Any]) -> str:
    """Render a role's template file; every error names the template file and line."""
    try:
        return _render(env.get_template(src), ctx)
    except InputError:
        raise
    except jinja2.TemplateSyntaxError as exc:
        name = exc.filename or str(role.dir / src)
        raise InputError(f"template syntax error: {exc.message}", file=f"{name}:{exc.lineno}") from None
    except Exception as exc:  # noqa: BLE001 - a template is user code
        raise InputError(describe(exc), file=template_location(exc, role.dir, role.dir / src)) from None


def template_location(exc: BaseException, directory: Path, default: Path) -> str:
    """`file:line` of the innermost template frame in the traceback (includes count)."""
    tb = exc.__traceback__
    found = str(default)
    prefix = str(directory) + "/"
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.startswith(prefix) and not name.endswith(".py"):
            found = f"{name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found
