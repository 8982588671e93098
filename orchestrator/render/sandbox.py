"""The Jinja sandbox every template runs in, and the budgets that bound what it may compute.

Inventory, playbook and role values are templates rendered on the controller, so a value
must not be able to hang it or fill its memory. Jinja's immutable sandbox stops escapes;
this module bounds the work:

* **steps** — every loop iteration, call, filter, operator and attribute lookup costs one;
  a render may take `MAX_STEPS`, and a whole run (`run_budget()`, every value of every
  service) `MAX_RUN_STEPS`, so a thousand aliases of one heavy value cannot add up either;
* **items** — `range()` and sequence repetition (`'x' * n`) make at most `MAX_ITEMS`;
* **sizes** — a call that would build a long string (`center(300000000)`, `indent`,
  `replace`, a `%`/`format` width) is refused *before* it runs; any text a filter, call,
  operator, `~` or block makes is checked as it is made (`MAX_TEXT`), as is the output;
* **numbers** — `**` and `*` on integers are refused past `MAX_INT_BITS`
  (`((10**1000)**1000)**1000` is refused at once, not computed);
* **time** — a render that has used more than `MAX_CPU_S` of its thread's CPU stops at its
  next step, whatever it was doing: the budgets are the rule, this is the backstop.

Every refusal is a `SecurityError`, which the caller turns into an input error naming the
file, line and key.
"""

from __future__ import annotations

import contextvars
import functools
import operator
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.sandbox
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.visitor import NodeTransformer

MAX_STEPS = 200_000           # per render of one value or file
MAX_RUN_STEPS = 2_000_000     # per run (run_budget): every value of every service together
MAX_ITEMS = 200_000           # range() items and sequence repetition, per render
MAX_TEXT = 8 * 1024 * 1024    # characters of any one text a template makes (and of its output)
MAX_ARGUMENT = 1024 * 1024    # characters of one string passed to a call
MAX_INT_BITS = 4096           # integers a template may compute (a 1233-digit number)
MAX_FORMAT_WIDTH = 10_000     # width or precision in a % or format() spec
MAX_CPU_S = 1.0               # the backstop: thread CPU time of one render
_CHECK_TIME_EVERY = 1024


@dataclass
class Budget:
    """What one render may still spend."""

    steps: int
    items: int
    deadline: float
    run: list[int] | None = None
    started_steps: int = 0

    def step(self, count: int = 1) -> None:
        self.steps -= count
        if self.steps < 0:
            if self.started_steps < MAX_STEPS:  # the run's budget, not this render's, ran out
                raise SecurityError(f"the run's templates do more than {MAX_RUN_STEPS} steps (loops, calls, filters)")
            raise SecurityError(f"the template does more than {MAX_STEPS} steps (loops, calls, filters)")
        if self.steps % _CHECK_TIME_EVERY == 0 and time.thread_time() > self.deadline:
            raise SecurityError(f"the template ran for more than {MAX_CPU_S:g}s of CPU")

    def spend_items(self, count: int) -> None:
        self.items -= count
        if self.items < 0:
            raise SecurityError(f"the template makes more than {MAX_ITEMS} items")


_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("jinja_budget", default=None)
_run: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("jinja_run_budget", default=None)


def current() -> Budget:
    """The budget of the render under way (a fresh one outside any render)."""
    budget = _budget.get()
    return budget if budget is not None else Budget(MAX_STEPS, MAX_ITEMS, time.thread_time() + MAX_CPU_S,
                                                    started_steps=MAX_STEPS)


@contextmanager
def render_budget() -> Iterator[Budget]:
    """A budget for one render, drawn from the run's when there is one."""
    run = _run.get()
    if run is not None and run[0] <= 0:
        raise SecurityError(f"the run's templates do more than {MAX_RUN_STEPS} steps (loops, calls, filters)")
    steps = MAX_STEPS if run is None else min(MAX_STEPS, run[0])
    budget = Budget(steps, MAX_ITEMS, time.thread_time() + MAX_CPU_S, run, steps)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)
        if run is not None:
            run[0] -= budget.started_steps - max(budget.steps, 0)


@contextmanager
def run_budget() -> Iterator[None]:
    """Every render inside shares MAX_RUN_STEPS (a run of plan, render or deploy); nested: the outer."""
    if _run.get() is not None:
        yield
        return
    token = _run.set([MAX_RUN_STEPS])
    try:
        yield
    finally:
        _run.reset(token)


# ---------------------------------------------------------------- sizes


def checked(value: Any) -> Any:
    """`value`, refused when it is a text or sequence longer than a template may make."""
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise SecurityError(f"the template makes a text of more than {MAX_TEXT} characters")
    if isinstance(value, list | tuple | dict) and len(value) > MAX_ITEMS:
        raise SecurityError(f"the template makes more than {MAX_ITEMS} items")
    return value


def _width(value: Any) -> int:
    return abs(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def _replace_size(text: Any, old: Any, new: Any) -> int:
    if not isinstance(text, str) or not isinstance(old, str) or not isinstance(new, str):
        return 0
    matches = text.count(old) if old else len(text) + 1
    return len(text) + matches * max(len(new) - len(old), 0)


def _indent_size(text: Any, width: Any = 4, *args: Any, **kwargs: Any) -> int:
    pad = _width(width) if not isinstance(width, str) else len(width)
    return _text_len(text) + (text.count("\n") + 1 if isinstance(text, str) else 0) * pad


# The size of what a filter or str method would build, from its arguments, before it runs.
_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda text, width=80, *a, **k: max(_text_len(text), _width(width)),
    "indent": _indent_size,
    "replace": lambda text, old="", new="", *a, **k: _replace_size(text, old, new),
    "truncate": lambda text, length=255, *a, **k: min(_text_len(text), _width(length)),
    "wordwrap": lambda text, width=79, *a, **k: 2 * _text_len(text),
}
_METHOD_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda s, width=0, *a: max(len(s), _width(width)),
    "ljust": lambda s, width=0, *a: max(len(s), _width(width)),
    "rjust": lambda s, width=0, *a: max(len(s), _width(width)),
    "zfill": lambda s, width=0, *a: max(len(s), _width(width)),
    "expandtabs": lambda s, tabsize=8, *a: len(s) + s.count("\t") * _width(tabsize),
    "replace": lambda s, old="", new="", *a: _replace_size(s, old, new),
}

_WIDE_SPEC = re.compile(r"%[-#0 +]*(?:\*|[0-9]+)?(?:\.(?:\*|[0-9]+))?[a-zA-Z%]")
_FORMAT_FIELD = re.compile(r"\{[^{}]*\}")


def check_format(fmt: Any) -> None:
    """Refuse a `%` or `str.format` spec with a width or precision past MAX_FORMAT_WIDTH, or
    one taken from an argument (`%*d`, `{:{}}`)."""
    if not isinstance(fmt, str):
        return
    specs = [m.group(0) for m in _WIDE_SPEC.finditer(fmt)]
    specs += [f.split(":", 1)[1] for f in _FORMAT_FIELD.findall(fmt) if ":" in f]
    if "{:{" in fmt.replace(" ", "") or re.search(r"\{[^{}]*:[^{}]*\{", fmt):
        raise SecurityError("a format width taken from an argument is not allowed")
    for spec in specs:
        if "*" in spec or any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"[0-9]+", spec)):
            raise SecurityError(f"a format width or precision above {MAX_FORMAT_WIDTH}")


def guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a filter that costs a step, refuses what would build too much, checks what it made."""
    size = _FILTER_SIZES.get(name)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        current().step()
        values = [a for a in args if not isinstance(a, jinja2.runtime.Context | jinja2.nodes.EvalContext
                                                      | jinja2.Environment)]
        if size is not None and values and size(*values, **kwargs) > MAX_TEXT:
            raise SecurityError(f"the {name} filter would make a text of more than {MAX_TEXT} characters")
        if name == "format" and values:
            check_format(values[0])
        return checked(func(*args, **kwargs))

    return guarded


def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Before a call: its string arguments are not huge, a str method would not build too much."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, str) and len(value) > MAX_ARGUMENT:
            raise SecurityError("argument too large")
    method = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format in its own function
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if isinstance(owner, str):
        size = _METHOD_SIZES.get(name)
        if size is not None and size(owner, *args) > MAX_TEXT:
            raise SecurityError(f"str.{name} would make a text of more than {MAX_TEXT} characters")
        if name in ("format", "format_map"):
            check_format(owner)


# ---------------------------------------------------------------- operators


def _int_bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) and not isinstance(value, bool) else 0


def binop(op: str, left: Any, right: Any) -> Any:
    """An arithmetic operator, refused before it runs when its result could not be small."""
    current().step()
    if op == "**" and isinstance(left, int) and isinstance(right, int):
        if right > 0 and _int_bits(left) * right > MAX_INT_BITS and abs(left) > 1:
            raise SecurityError(f"the exponent makes a number of more than {MAX_INT_BITS} bits")
    elif op == "**" and isinstance(right, int | float) and abs(right) > 10_000:
        raise SecurityError("exponent too large")
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                current().spend_items(len(seq) * max(times, 0))
        if _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
            raise SecurityError(f"the product is a number of more than {MAX_INT_BITS} bits")
    if op == "%" and isinstance(left, str):
        check_format(left)
    return checked(_OPERATORS[op](left, right))


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
}


def bounded_range(*args: int) -> range:
    items = range(*args)
    current().spend_items(len(items))
    return items


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, one step each (every `{% for %}` iterates through this)."""
    budget = current()
    for item in iterable:
        budget.step()
        yield item


def bounded_concat(parts: Iterable[Any]) -> str:
    """`{% set %}` blocks, macros and `~`: joined, refused once past MAX_TEXT."""
    out: list[str] = []
    size = 0
    for part in parts:
        text = str(part)
        size += len(text)
        if size > MAX_TEXT:
            raise SecurityError(f"the template makes a text of more than {MAX_TEXT} characters")
        out.append(text)
    return "".join(out)


def _concat_filter(value: Any) -> Any:
    return checked(value)


class _Counting(NodeTransformer):
    """Every loop iterates through `counted`, and every `~` result is checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        visited = self.generic_visit(node)
        if isinstance(visited, nodes.For) and not visited.recursive:
            visited.iter = nodes.Filter(visited.iter, "swarm_counted", [], [], None, None, lineno=visited.lineno)
        return visited

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        visited = self.generic_visit(node)
        return nodes.Filter(visited, "swarm_checked", [], [], None, None, lineno=node.lineno)


class Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """The immutable sandbox, with the budgets above on what a template can make the controller do."""

    intercepted_binops = frozenset(_OPERATORS)
    concat = staticmethod(bounded_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name in ("lipsum", "cycler", "joiner", "namespace"):
            self.globals.pop(name, None)
        self.globals["range"] = bounded_range
        self.filters["swarm_counted"] = counted
        self.filters["swarm_checked"] = _concat_filter

    def guard_filters(self) -> None:
        """Wrap every filter (call after adding the environment's own)."""
        for name, func in list(self.filters.items()):
            if not name.startswith("swarm_") and not getattr(func, "__wrapped__", None):
                self.filters[name] = guard_filter(name, func)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        return _Counting().visit(tree)  # type: ignore[no-any-return]

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        return binop(op, left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any,  # noqa: N805 - jinja's signature
             *args: Any, **kwargs: Any) -> Any:
        current().step()
        check_call(__obj, args, kwargs)
        return checked(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        current().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        current().step()
        return super().getitem(obj, argument)
