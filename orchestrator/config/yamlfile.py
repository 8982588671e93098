"""Loading YAML safely and fast, and turning validation errors into path-qualified messages.

Every loader reads its file through `load_yaml`. Reading is bounded: only regular files
(a FIFO or a device is refused without blocking), at most `MAX_BYTES`, at most
`MAX_DEPTH` levels of nesting and `MAX_VALUES` values counted with every alias expanded
(an alias bomb is refused before anything walks it), no recursive aliases. The data is
built by libyaml (`yaml.CSafeLoader`) with stricter scalars than YAML 1.1:

* `022` (octal 18 in YAML 1.1, 22 in YAML 1.2) and `1:30` (base 60) are refused: say what you mean;
* `yes`/`no`/`on`/`off` are refused: write `true`/`false`, or quote the text;
* `.nan`/`.inf` and integers longer than 40 digits are refused;
* dates stay text, duplicate keys and unhashable keys are errors.

Positions cost time, so they are only computed when an error needs one: `YamlDoc.lines`
maps each value's path (`("nodes", "starlord", "gpus", 0, "vram_mib")`) to its line,
walking each node once (an alias is not expanded), so an error can say
`inventory/swarm.yml:14: nodes.starlord.gpus[0].vram_mib: expected a number, got "24GB"`.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.errors import InputError
from orchestrator.text import printable

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

MAX_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 100_000
MAX_INT_DIGITS = 40

_CLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlDoc:
    """A parsed YAML document; `lines` (1-based, per value path) is built on first use."""

    path: Path
    data: Any
    text: str = field(default="", repr=False, compare=False)
    node: yaml.Node | None = field(default=None, repr=False, compare=False)

    @cached_property
    def lines(self) -> dict[PathKey, int]:
        out: dict[PathKey, int] = {}
        node = self.node
        if node is None and self.text:
            try:
                node = yaml.compose(self.text, Loader=_CLoader)  # noqa: S506 - safe loader
            except yaml.YAMLError:
                node = None
        if node is not None:
            _index_lines(node, (), out, set())
        return out

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        key = tuple(loc)
        lines = self.lines
        while key:
            if key in lines:
                return lines[key]
            key = key[:-1]
        return None

    def where(self, loc: Sequence[str | int]) -> str:
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line else str(self.path)


# ---------------------------------------------------------------- reading


def read_bounded(path: Path, what: str = "file", limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", file=str(path)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "it is a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise InputError(f"cannot read {what}: {kind}", file=str(path))
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > limit:
            raise InputError(f"{what} is {info.st_size} bytes, more than the {limit} allowed",
                             file=str(path))
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InputError(f"cannot read {what}: {exc.strerror}", file=str(path)) from None
    if len(data) > limit:
        raise InputError(f"{what} is more than the {limit} bytes allowed", file=str(path))
    return data


def decode_utf8(data: bytes, path: Path | str, what: str = "file") -> str:
    """UTF-8 text; a bad byte is an error naming its line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{what} is not UTF-8 text (byte {exc.start} is not valid)",
                         file=f"{path}:{line}") from None


def load_yaml(path: Path, *, what: str = "file") -> YamlDoc:
    """Read and parse `path`; every problem becomes an InputError with the file (and line)."""
    text = decode_utf8(read_bounded(path, what), path, what)
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDoc:
    if len(text) > MAX_BYTES:
        raise InputError(f"more than the {MAX_BYTES} bytes allowed", file=str(path))
    node: yaml.Node | None = None
    try:
        if not _surely_shallow(text):
            _scan_depth(text, path)
        node = yaml.compose(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
        if node is None:
            return YamlDoc(path=path, data=None, text=text)
        if "&" in text:
            _check_graph(node, path)
        else:
            _check_tree(node, path)
        data = _StrictLoader("").construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError):
            key = _key_at(node, mark.line + 1) if mark else ""
            raise InputError(f"{key}{exc.problem or problem}", file=f"{path}{line}") from None
        raise InputError(f"YAML syntax error: {problem}", file=f"{path}{line}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", file=str(path)) from None
    return YamlDoc(path=path, data=data, text=text, node=node)


def parse_foreign_yaml(text: str, path: Path | str) -> YamlDoc:
    """A YAML file another program reads (a rendered LiteLLM or Grafana config): YAML 1.1 as
    PyYAML reads it, with the same limits and lazy line index as swarm's own files."""
    where = Path(path)
    try:
        if len(text) > MAX_BYTES or not _surely_shallow(text):
            _scan_depth(text, where)
        node = yaml.compose(text, Loader=_CLoader)  # noqa: S506 - safe loader
        if node is None:
            return YamlDoc(path=where, data=None, text=text)
        _check_graph(node, where)
        data = _CLoader("").construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise InputError(f"YAML syntax error: {problem}", file=f"{where}{line}") from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise InputError(f"YAML error: {type(exc).__name__}", file=str(where)) from None
    return YamlDoc(path=where, data=data, text=text, node=node)


def _key_at(node: yaml.Node | None, line: int) -> str:
    """`key.path: ` of the deepest value on `line` (for errors found while building the data)."""
    if node is None:
        return ""
    lines: dict[PathKey, int] = {}
    _index_lines(node, (), lines, set())
    paths = [p for p, n in lines.items() if n == line and p]
    return f"{format_loc(max(paths, key=len))}: " if paths else ""


# ---------------------------------------------------------------- limits

_SAFE_NESTING = 1000   # libyaml's composer recurses in C: far below where its stack ends


def _surely_shallow(text: str) -> bool:
    """True when nesting cannot pass _SAFE_NESTING: each block level takes a column of
    indentation or a `- `, each flow level a bracket."""
    longest = max(map(len, text.splitlines()), default=0)
    return longest + text.count("[") + text.count("{") < _SAFE_NESTING


def _scan_depth(text: str, path: Path) -> None:
    """Nesting depth from libyaml's events (no recursion, nothing built), for unusual files."""
    depth = 0
    for event in yaml.parse(text, Loader=_CLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                _limit(path, event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_tree(root: yaml.Node, path: Path) -> None:
    """Depth and number of values of a document without anchors (so without aliases)."""
    if isinstance(root, yaml.ScalarNode):
        return
    count = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            _limit(path, node.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        children = [n for pair in node.value for n in pair] if type(node) is yaml.MappingNode else node.value
        count += len(children)
        stack.extend((c, depth + 1) for c in children if type(c) is not yaml.ScalarNode)
    if count > MAX_VALUES:
        _limit(path, root.start_mark, f"more than {MAX_VALUES} values")


def _check_graph(root: yaml.Node, path: Path) -> None:
    """Depth and number of values with every alias expanded, each node visited once;
    an alias to a value that contains it is refused."""
    sizes: dict[int, tuple[int, int]] = {}      # node id -> (values, depth)
    open_ids: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            values = 1 + sum(sizes[id(c)][0] for c in children)
            depth = 1 + max((sizes[id(c)][1] for c in children), default=0)
            sizes[key] = (values, depth)
            open_ids.discard(key)
            if values > MAX_VALUES:
                _limit(path, node.start_mark, f"more than {MAX_VALUES} values (counting every alias expanded)")
            if depth > MAX_DEPTH:
                _limit(path, node.start_mark, f"nested more than {MAX_DEPTH} levels deep")
            continue
        if key in sizes:
            continue
        if key in open_ids:
            _limit(path, node.start_mark, "an alias refers to a value that contains it")
        open_ids.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_ids:
                _limit(path, child.start_mark, "an alias refers to a value that contains it")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _limit(path: Path, mark: Any, problem: str) -> None:
    line = mark.line + 1 if mark is not None else 0
    head = "YAML alias loops" if "alias refers" in problem else "YAML document too large"
    raise InputError(f"{head}: {problem}", file=f"{path}:{line}" if line else str(path))


# ---------------------------------------------------------------- strict scalars


class _StrictLoader(_CLoader):  # type: ignore[valid-type,misc]
    """libyaml's safe loader with the scalar rules in the module docstring."""


def _problem(node: yaml.Node, problem: str) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=False)
        if not isinstance(key, Hashable) or isinstance(key, list | dict):
            raise _problem(key_node, "a mapping key must be a plain value, not a list or mapping")
        if key in seen:
            raise _problem(key_node, f"duplicate key {_short(repr(key), 20)} (first at line {seen[key]})")
        seen[key] = key_node.start_mark.line + 1
    loader.flatten_mapping(node)
    return {loader.construct_object(k, deep=True): loader.construct_object(v, deep=True)
            for k, v in node.value}


_AMBIGUOUS_OCTAL = re.compile(r"[-+]?0[0-9_]+")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(node.value)
    if len(text) > MAX_INT_DIGITS:
        raise _problem(node, f"number {text[:20]}... has more than {MAX_INT_DIGITS} digits")
    if ":" in text:
        raise _problem(node, f"{text} is read by YAML 1.1 as a base-60 number: quote it (\"{text}\")")
    if _AMBIGUOUS_OCTAL.fullmatch(text):
        value = int(text.replace("_", ""), 8)
        raise _problem(node, f"{text} is octal {value} in YAML 1.1 but {int(text.replace('_', ''))} in "
                             f"YAML 1.2: write it without the leading 0, or quote it")
    return int(loader.construct_yaml_int(node))


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(node.value)
    if ":" in text:
        raise _problem(node, f"{text} is read by YAML 1.1 as a base-60 number: quote it (\"{text}\")")
    value = float(loader.construct_yaml_float(node))
    if not math.isfinite(value):
        raise _problem(node, f"{text} is not a finite number")
    return value


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    text = str(node.value)
    if text.lower() not in ("true", "false"):
        raise _problem(node, f"{text} is a boolean in YAML 1.1 but text in YAML 1.2: write true or false, "
                             f"or quote it (\"{text}\") if you mean the text")
    return text.lower() == "true"


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(node.value)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


# ---------------------------------------------------------------- positions


def _index_lines(node: yaml.Node, prefix: PathKey, out: dict[PathKey, int], seen: set[int]) -> None:
    """Line of every path; a node reached again through an alias is not walked again."""
    out.setdefault(prefix, node.start_mark.line + 1)
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:merge":
                continue
            out[prefix + (key,)] = key_node.start_mark.line + 1
            _index_lines(value_node, prefix + (key,), out, seen)
            out[prefix + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, prefix + (i,), out, seen)


# ---------------------------------------------------------------- messages


def format_loc(loc: Sequence[str | int]) -> str:
    """("nodes", "starlord", "gpus", 0, "vram_mib") -> nodes.starlord.gpus[0].vram_mib"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = _short(part, 64) if part else '""'
            out += f".{text}" if out else text
    return out or "(top level)"


def validate(model: type[M], doc: YamlDoc, what: str) -> M:
    """Validate `doc.data` against `model`; the first error becomes a path-qualified InputError."""
    data = {} if doc.data is None else doc.data
    if not isinstance(data, Mapping):
        raise InputError(
            # never the content: -i may name any file (/etc/shadow), and this is all it holds
            f"{what} must be a mapping at the top level, got {kind_of(data)}", file=str(doc.path)
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, doc) from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply", file=str(doc.path)) from None


def validation_error(exc: ValidationError, doc: YamlDoc, prefix: PathKey = ()) -> InputError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = prefix + _clean_loc(first["loc"])
    same = [e for e in errors if _clean_loc(e["loc"]) == _clean_loc(first["loc"])]
    message = _describe_union(same) if len(same) > 1 and _is_union(first["loc"]) else describe_error(first)
    others = len({_clean_loc(e["loc"]) for e in errors}) - 1
    more = f" (and {others} more)" if others > 0 else ""
    return InputError(f"{format_loc(loc)}: {message}{more}", file=doc.where(loc))


_MEMBERS = {"int", "str", "float", "bool", "none", "list", "dict", "bytes"}


def _clean_loc(loc: Sequence[str | int]) -> PathKey:
    return tuple(p for p in loc if not _is_union_tag(p) and p not in _MEMBERS)


def _is_union(loc: Sequence[str | int]) -> bool:
    return any(isinstance(p, str) and (p in _MEMBERS or "[" in p) for p in loc)


def _describe_union(errors: list[Any]) -> str:
    kinds = {"int_type": "a number", "int_parsing": "a number", "float_type": "a number", "string_type": "text",
             "bool_type": "true or false", "list_type": "a list", "dict_type": "a mapping"}
    wanted = list(dict.fromkeys(kinds[e["type"]] for e in errors if e["type"] in kinds))
    if len(wanted) < 2:
        return describe_error(errors[0])
    choices = ", ".join(wanted[:-1]) + f" or {wanted[-1]}"
    return f"expected {choices}, got {_show(errors[0].get('input'))}"


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part in {"function-after", "function-before",
                                                              "function-plain", "function-wrap"})


_NUMBER_ERRORS = {"int_parsing", "float_parsing", "int_type", "float_type", "int_from_float",
                  "finite_number"}


def describe_error(err: Any) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in _NUMBER_ERRORS:
        return f"expected a number, got {_show(got)}"
    if kind in {"bool_parsing", "bool_type"}:
        return f"expected true or false, got {_show(got)}"
    if kind in {"string_type"}:
        return f"expected a string, got {_show(got)}"
    if kind in {"list_type"}:
        return f"expected a list, got {_show(got)}"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"expected a mapping, got {_show(got)}"
    msg = str(err.get("msg", kind))
    msg = msg.removeprefix("Value error, ")
    if kind.startswith("literal") or kind in {"greater_than", "greater_than_equal", "less_than",
                                              "less_than_equal", "too_short", "too_long"}:
        return f"{msg}, got {_show(got)}"
    return msg


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    shown = text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
    return printable(shown)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{_short(value)}"'
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return _short(value)


def show_value(value: Any) -> str:
    """A value as messages quote it: short, strings in double quotes."""
    return _show(value)


def kind_of(value: Any) -> str:
    """What a value is, without any of its content."""
    if isinstance(value, str):
        return f"text ({len(value)} characters)"
    return type_name(value) if value is None or isinstance(value, Mapping | list) else type(value).__name__


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_short(value)}"
