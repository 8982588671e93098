"""Service settings: what a role lets its instances set, with type, range and allowed values.

A role's settings are the keys of its `defaults` and `required_vars`, plus the engine-level
settings every service understands (`ENGINE_SETTINGS`). Their form comes from an explicit
declaration in the role's `settings:` block, e.g.

    settings:
      max_model_len: {type: int, min: 1}
      gpu_memory_utilization: {type: number, gt: 0, max: 1}
      kv_cache_dtype: {values: [auto, fp8, fp8_e4m3, fp8_e5m2]}

or, when there is none, from the default's own type (`infer`): a bool default makes a bool
setting, an int an int (`port` and `*_port`: 1..65535), a float a number, a string text,
a list a list, a mapping a mapping, null anything.

Values are checked after rendering (a setting may be `"{{ other }}"`), and a problem is
blamed on the place that set the value — the role's defaults, the inventory's fleet, group
or host vars, the playbook's service vars or `nodes.<n>.services.<s>` — with file, line
and key path (`Origin`). A key an instance sets that its role does not know is a typo:
"unknown setting `max_modle_len` (did you mean `max_model_len`?)".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from orchestrator.config.models import Model, parse_duration
from orchestrator.config.yamlfile import PathKey, format_loc, show_value

SettingType = Literal["any", "string", "int", "number", "bool", "port", "duration", "list", "mapping"]
Scalar = str | int | float | bool | None


class SettingSpec(Model):
    """The form of one setting; `problem(value)` says what is wrong with a value (None: fine)."""

    type: SettingType = "any"
    values: list[Scalar] | None = None
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    pattern: str | None = None
    nullable: bool = False
    description: str = ""

    def problem(self, value: Any) -> str | None:
        if value is None:
            ok = self.nullable or self.type == "any" or (self.values is not None and None in self.values)
            return None if ok else f"expected {self.expected()}, got nothing (null)"
        if self.values is not None:
            if not any(type(v) is type(value) and v == value for v in self.values):
                allowed = ", ".join("null" if v is None else str(v) for v in self.values)
                return f"expected one of: {allowed}; got {show_value(value)}"
            return None
        return _TYPE_CHECKS[self.type](self, value)

    def expected(self) -> str:
        return _EXPECTED[self.type]


# ---------------------------------------------------------------- per type

_INT_TEXT = re.compile(r"-?\d{1,18}")
_NUMBER_TEXT = re.compile(r"-?\d{1,18}(?:\.\d{1,18})?")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    return None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return float(value)
    return None


def _range(spec: SettingSpec, number: float, value: Any) -> str | None:
    if spec.gt is not None and not number > spec.gt:
        return f"expected more than {spec.gt:g}, got {show_value(value)}"
    if spec.min is not None and number < spec.min:
        return f"expected at least {spec.min:g}, got {show_value(value)}"
    if spec.max is not None and number > spec.max:
        return f"expected at most {spec.max:g}, got {show_value(value)}"
    return None


def _check_int(spec: SettingSpec, value: Any) -> str | None:
    number = _as_int(value)
    if number is None:
        return f"expected a whole number, got {show_value(value)}"
    return _range(spec, number, value)


def _check_number(spec: SettingSpec, value: Any) -> str | None:
    number = _as_number(value)
    if number is None:
        return f"expected a finite number, got {show_value(value)}"
    return _range(spec, number, value)


def _check_port(spec: SettingSpec, value: Any) -> str | None:
    number = _as_int(value)
    if number is None or not 1 <= number <= 65535:
        return f"expected a port number 1..65535, got {show_value(value)}"
    return None


def _check_bool(spec: SettingSpec, value: Any) -> str | None:
    if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
        return None
    return f"expected true or false, got {show_value(value)}"


def _check_string(spec: SettingSpec, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return f"expected text, got {show_value(value)}"
    if spec.pattern is not None and not re.fullmatch(spec.pattern, str(value)):
        return f"expected text matching {spec.pattern}, got {show_value(value)}"
    return None


def _check_duration(spec: SettingSpec, value: Any) -> str | None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        return str(exc)
    return _range(spec, seconds, value)


def _check_list(spec: SettingSpec, value: Any) -> str | None:
    return None if isinstance(value, list) else f"expected a list, got {show_value(value)}"


def _check_mapping(spec: SettingSpec, value: Any) -> str | None:
    return None if isinstance(value, dict) else f"expected a mapping, got {show_value(value)}"


_TYPE_CHECKS = {
    "any": lambda spec, value: None,
    "string": _check_string,
    "int": _check_int,
    "number": _check_number,
    "bool": _check_bool,
    "port": _check_port,
    "duration": _check_duration,
    "list": _check_list,
    "mapping": _check_mapping,
}
_EXPECTED = {"any": "a value", "string": "text", "int": "a whole number", "number": "a number",
             "bool": "true or false", "port": "a port number 1..65535", "duration": "a duration like 30s",
             "list": "a list", "mapping": "a mapping"}


# ---------------------------------------------------------------- known settings

ENGINE_SETTINGS: dict[str, SettingSpec] = {
    "healthy_deadline": SettingSpec(type="duration", nullable=True,
                                    description="this instance's gate deadline (replaces the phase's)"),
    "min_healthy_time": SettingSpec(type="duration", nullable=True,
                                    description="how long every probe must keep passing"),
    "extra_env": SettingSpec(type="mapping", nullable=True,
                             description="more environment variables for the container"),
    "gpu": SettingSpec(type="int", min=0, max=1023, description="the GPU index a GPU role uses"),
    "image_tag": SettingSpec(type="string", pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
                             description="the image tag, for roles whose image names {{ image_tag }}"),
}
"""Settings every service understands, whatever its role (documented in docs/validation.md)."""


def infer(name: str, default: Any) -> SettingSpec:
    """The form of an undeclared setting, from its default."""
    if isinstance(default, str) and ("{{" in default or "{%" in default):
        return SettingSpec(type="any")
    if isinstance(default, bool):
        return SettingSpec(type="bool")
    if isinstance(default, int):
        return SettingSpec(type="port" if name == "port" or name.endswith("_port") else "int")
    if isinstance(default, float):
        return SettingSpec(type="number")
    if isinstance(default, str):
        return SettingSpec(type="string")
    if isinstance(default, list):
        return SettingSpec(type="list")
    if isinstance(default, dict):
        return SettingSpec(type="mapping")
    return SettingSpec(type="any")


def role_settings(defaults: dict[str, Any], required: list[str],
                  declared: dict[str, SettingSpec]) -> dict[str, SettingSpec]:
    """Every setting a role's instances may set, with its form."""
    out = dict(ENGINE_SETTINGS)
    out.update({k: infer(k, v) for k, v in defaults.items() if k not in ENGINE_SETTINGS})
    out.update({k: SettingSpec(type="any") for k in required if k not in defaults})
    out.update(declared)
    return out


# ---------------------------------------------------------------- where a value comes from


class Located(Protocol):
    def where(self, loc: PathKey) -> str: ...


@dataclass(frozen=True)
class Origin:
    """The file and key path that set a value; `where()` reads the line only when asked."""

    source: Located
    loc: PathKey

    def where(self) -> str:
        return self.source.where(self.loc)

    @property
    def key(self) -> str:
        return format_loc(self.loc)

    def blame(self, problem: str) -> tuple[str, str]:
        """(message, file) for an InputError about this value."""
        return f"{self.key}: {problem}", self.where()
