"""Loading YAML with positions, and turning validation errors into path-qualified messages.

Every loader reads its file through `load_yaml`, which keeps a map from each value's
path (`("nodes", "starlord", "gpus", 0, "vram_mib")`) to its line, so an error can say
`inventory/swarm.yml:14: nodes.starlord.gpus[0].vram_mib: expected a number, got "24GB"`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.errors import InputError

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class YamlDoc:
    """A parsed YAML document with the line of every value (1-based)."""

    path: Path
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return None

    def where(self, loc: Sequence[str | int]) -> str:
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line else str(self.path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml(path: Path, *, what: str = "file") -> YamlDoc:
    """Read and parse `path`; syntax errors become InputError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what}: {exc}", file=str(path)) from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDoc:
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError(f"YAML syntax error: {problem}", file=f"{path}{line}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", file=str(path)) from None
    lines: dict[PathKey, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return YamlDoc(path=path, data=data, lines=lines)


def _index_lines(node: yaml.Node, prefix: PathKey, out: dict[PathKey, int]) -> None:
    out[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            out[prefix + (key,)] = key_node.start_mark.line + 1
            _index_lines(value_node, prefix + (key,), out)
            out[prefix + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, prefix + (i,), out)


def format_loc(loc: Sequence[str | int]) -> str:
    """("nodes", "starlord", "gpus", 0, "vram_mib") -> nodes.starlord.gpus[0].vram_mib"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validate(model: type[M], doc: YamlDoc, what: str) -> M:
    """Validate `doc.data` against `model`; the first error becomes a path-qualified InputError."""
    data = {} if doc.data is None else doc.data
    if not isinstance(data, Mapping):
        raise InputError(
            f"{what} must be a mapping at the top level, got {type_name(data)}", file=str(doc.path)
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, doc) from None


def validation_error(exc: ValidationError, doc: YamlDoc, prefix: PathKey = ()) -> InputError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = prefix + tuple(p for p in first["loc"] if not _is_union_tag(p))
    message = describe_error(first)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InputError(f"{format_loc(loc)}: {message}{more}", file=doc.where(loc))


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part in {"function-after", "function-before"})


def describe_error(err: Any) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in {"int_parsing", "float_parsing", "int_type", "float_type"}:
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
    return f"{msg}, got {_show(got)}" if kind.startswith("literal") else msg


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
