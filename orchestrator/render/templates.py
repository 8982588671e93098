"""Jinja for roles: one strict environment; strings and template files rendered with the
instance variables. An undefined variable is an error naming the file and line."""

from __future__ import annotations

from typing import Any

import jinja2
import yaml

from orchestrator.config.roles import Role
from orchestrator.config.yamlfile import format_loc
from orchestrator.errors import InputError


def jinja_env(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - config files, not HTML
        loader=loader,
    )
    env.filters["to_yaml"] = lambda v: yaml.safe_dump(v, sort_keys=False, default_flow_style=False)
    env.filters["quote_haproxy"] = lambda v: '"' + str(v).replace('"', '\\"') + '"'
    return env


_STRING_ENV = jinja_env()


def render_string(text: str, context: dict[str, Any], where: str) -> str:
    try:
        return _STRING_ENV.from_string(text).render(context)
    except jinja2.UndefinedError as exc:
        raise InputError(f"{exc.message} (in {text!r})", file=where) from None
    except jinja2.TemplateError as exc:
        raise InputError(f"template error: {exc} (in {text!r})", file=where) from None


def render_value(value: Any, context: dict[str, Any], where: str, loc: tuple[str | int, ...] = ()) -> Any:
    """Render every string inside `value`; a string that is only one expression keeps its type."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        here = f"{where}: {format_loc(loc)}" if loc else where
        out = render_string(value, context, here)
        return _native(out) if _is_single_expr(value) else out
    if isinstance(value, dict):
        return {k: render_value(v, context, where, loc + (k,)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, context, where, loc + (i,)) for i, v in enumerate(value)]
    return value


def _is_single_expr(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1


def _native(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | bool) and not isinstance(value, bool) else text


def render_template(env: jinja2.Environment, role: Role, src: str, ctx: dict[str, Any]) -> str:
    try:
        return env.get_template(src).render(ctx)
    except jinja2.UndefinedError as exc:
        line = template_line(exc, src)
        raise InputError(f"{exc.message}", file=f"{role.dir / src}{line}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"template syntax error: {exc.message}", file=f"{role.dir / src}:{exc.lineno}") from None


def template_line(exc: BaseException, src: str) -> str:
    tb = exc.__traceback__
    line = ""
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(src):
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line

