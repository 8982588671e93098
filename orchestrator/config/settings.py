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

Types say what a value may be where it ends up: `cidr`, `ip`, `host`, `ip_or_cidr`,
`identifier`, `size`, `url`, `abspath` besides the plain ones; a list or mapping says the
form of its items (`items:`) and keys (`keys:`). No string anywhere in a value may hold a
control character, a line separator or a bidirectional override (orchestrator/text.py).
Text that is a whole number is the number (`"8080"` -> 8080), but `"0443"` is refused:
YAML 1.1 and some tools read it as octal. `pattern`s run on RE2, a linear-time engine, so
no value makes a pattern backtrack (and a pattern RE2 cannot run is refused at load).

Values are checked after rendering (a setting may be `"{{ other }}"`), and a problem is
blamed on the place that set the value — the role's defaults, the inventory's fleet, group
or host vars, the playbook's service vars or `nodes.<n>.services.<s>` — with file, line
and key path (`Origin`). A key an instance sets that its role does not know is a typo:
"unknown setting `max_modle_len` (did you mean `max_model_len`?)".
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

import re2

from orchestrator.config.models import (
    Model,
    is_host,
    is_http_url,
    is_ip,
    parse_duration,
    relative_path_problem,
)
from orchestrator.config.yamlfile import PathKey, format_loc, show_value
from orchestrator.text import describe_char, unsafe_char

SettingType = Literal["any", "string", "int", "number", "bool", "port", "duration", "list", "mapping",
                      "cidr", "ip", "host", "ip_or_cidr", "identifier", "size", "url", "abspath"]
Scalar = str | int | float | bool | None
MAX_TEXT = 4096          # characters of one setting's text
MAX_ITEMS = 10_000       # items of one list or mapping setting


class SettingSpec(Model):
    """The form of one setting; `problem(value)` says what is wrong with a value (None: fine)."""

    type: SettingType = "any"
    values: list[Scalar] | None = None
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    pattern: str | None = None
    nullable: bool = False
    items: SettingSpec | None = None     # a list's items, a mapping's values
    keys: SettingSpec | None = None      # a mapping's keys
    description: str = ""

    def problem(self, value: Any) -> str | None:
        return unsafe_text(value) or self.form_problem(value)

    def form_problem(self, value: Any) -> str | None:
        if value is None:
            ok = self.nullable or self.type == "any" or (self.values is not None and None in self.values)
            return None if ok else f"expected {self.expected()}, got nothing (null)"
        if self.values is not None:
            if not any(type(v) is type(value) and v == value for v in self.values):
                allowed = ", ".join("null" if v is None else str(v) for v in self.values)
                return f"expected one of: {allowed}; got {show_value(value)}"
            return None
        return _TYPE_CHECKS[self.type](self, value) or self._items_problem(value)

    def _items_problem(self, value: Any) -> str | None:
        if isinstance(value, list) and self.items is not None:
            return next((f"[{i}]: {p}" for i, v in enumerate(value) if (p := self.items.form_problem(v))), None)
        if isinstance(value, dict):
            for key, item in value.items():
                problem = (self.keys.form_problem(key) if self.keys is not None else None) or (
                    self.items.form_problem(item) if self.items is not None else None)
                if problem:
                    return f"{show_value(key)}: {problem}"
        return None

    def expected(self) -> str:
        return _EXPECTED[self.type]

    def canonical(self, value: Any) -> Any:
        """The value as templates get it: text that is a whole number becomes the number."""
        if self.type in ("int", "port") and isinstance(value, str):
            number = _as_int(value)
            return value if number is None else number
        if isinstance(value, list) and self.items is not None:
            return [self.items.canonical(v) for v in value]
        return value


def unsafe_text(value: Any, depth: int = 0) -> str | None:
    """What is wrong with the strings inside `value`: a control character, a line separator,
    a bidirectional override, or more text than any setting needs."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            return f"more than {MAX_TEXT} characters ({len(value)})"
        bad = unsafe_char(value)
        return None if bad is None else f"{describe_char(bad)} is not allowed in a value, got {show_value(value)}"
    if isinstance(value, list | dict) and len(value) > MAX_ITEMS:
        return f"more than {MAX_ITEMS} items"
    if isinstance(value, list):
        return next((f"[{i}]: {p}" for i, v in enumerate(value) if (p := unsafe_text(v, depth + 1))), None)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = unsafe_text(key, depth + 1) or unsafe_text(item, depth + 1)
            if problem:
                return f"{show_value(key)}: {problem}"
    return None


# ---------------------------------------------------------------- per type

# no leading zero: "0443" is 443 to Python, octal 291 to YAML 1.1 (and to whatever reads it so)
_INT_TEXT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,18})?")


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
        return f"expected a whole number{_octal_hint(value)}, got {show_value(value)}"
    return _range(spec, number, value)


def _check_number(spec: SettingSpec, value: Any) -> str | None:
    number = _as_number(value)
    if number is None:
        return f"expected a finite number, got {show_value(value)}"
    return _range(spec, number, value)


def _check_port(spec: SettingSpec, value: Any) -> str | None:
    number = _as_int(value)
    if number is None or not 1 <= number <= 65535:
        return f"expected a port number 1..65535{_octal_hint(value)}, got {show_value(value)}"
    return None


def _octal_hint(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    return " (no leading zero: YAML 1.1 reads it as octal)" if re.fullmatch(r"-?0[0-9]+", text) else ""


def _check_bool(spec: SettingSpec, value: Any) -> str | None:
    if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
        return None
    return f"expected true or false, got {show_value(value)}"


def _check_string(spec: SettingSpec, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return f"expected text, got {show_value(value)}"
    if spec.pattern is not None and compiled_pattern(spec.pattern).fullmatch(str(value)) is None:
        return f"expected text matching {spec.pattern}, got {show_value(value)}"
    return None


@lru_cache(maxsize=512)
def compiled_pattern(pattern: str) -> Any:
    """`pattern` on RE2: matching time is linear in the text, whatever the pattern (`(a+)+`).
    Raises ValueError for what RE2 cannot run (backreferences, lookaround)."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"not a pattern RE2 can run (no backreferences or lookaround; repetitions at "
                         f"most 1000 in all): {why}") from None


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is ours to report, not absl's on stderr


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _check_cidr(spec: SettingSpec, value: Any) -> str | None:
    text = _text(value)
    if text is None or "/" not in text or not _is_network(text):
        return f"expected a network in CIDR form like 100.64.0.0/10{_host_bits(text)}, got {show_value(value)}"
    return None


def _host_bits(text: str | None) -> str:
    try:
        network = ipaddress.ip_network(text or "", strict=False)
    except ValueError:
        return ""
    return f" (host bits set: {network}?)" if "%" not in (text or "") else ""


def _is_network(text: str) -> bool:
    address = text.split("/", 1)[0]
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        return False
    return is_ip(address)


def _check_ip(spec: SettingSpec, value: Any) -> str | None:
    text = _text(value)
    return None if text is not None and is_ip(text) else f"expected an IP address (IPv6 without a %zone), got {show_value(value)}"


def _check_ip_or_cidr(spec: SettingSpec, value: Any) -> str | None:
    text = _text(value)
    if text is not None and (is_ip(text) or ("/" in text and _is_network(text))):
        return None
    return f"expected an IP address or a network like 100.64.0.0/10, got {show_value(value)}"


def _check_host(spec: SettingSpec, value: Any) -> str | None:
    text = _text(value)
    return None if text is not None and is_host(text) else f"expected a host name or IP address, got {show_value(value)}"


_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def _check_identifier(spec: SettingSpec, value: Any) -> str | None:
    text = _text(value)
    if text is None or not _IDENTIFIER.fullmatch(text):
        return (f"expected an identifier (letters, digits, '_', '.', '-', at most 63, starting with a letter "
                f"or digit), got {show_value(value)}")
    return _check_string(spec, value)


_SIZE = re.compile(r"(?:0|[1-9][0-9]{0,14})(?:[kKmMgG][bB]?)?")


def _check_size(spec: SettingSpec, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**15:
        return None
    text = _text(value)
    if text is None or not _SIZE.fullmatch(text):
        return f"expected a size like 512mb, 2g or a number of bytes, got {show_value(value)}"
    return None


def _check_url(spec: SettingSpec, value: Any) -> str | None:
    text = _text(value)
    if text is None or not is_http_url(text):
        return f"expected an http(s) URL like http://10.0.0.1:8200 (IPv6 in brackets), got {show_value(value)}"
    return None


def _check_abspath(spec: SettingSpec, value: Any) -> str | None:
    text = _text(value)
    if text is None or not text.startswith("/") or (len(text) > 1 and relative_path_problem(text[1:])):
        return (f"expected an absolute, normalised path like /etc/ai-swarm/tls (letters, digits and ._@+=,- "
                f"only), got {show_value(value)}")
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
    "cidr": _check_cidr,
    "ip": _check_ip,
    "ip_or_cidr": _check_ip_or_cidr,
    "host": _check_host,
    "identifier": _check_identifier,
    "size": _check_size,
    "url": _check_url,
    "abspath": _check_abspath,
}
_EXPECTED = {"any": "a value", "string": "text", "int": "a whole number", "number": "a number",
             "bool": "true or false", "port": "a port number 1..65535", "duration": "a duration like 30s",
             "list": "a list", "mapping": "a mapping", "cidr": "a network like 100.64.0.0/10",
             "ip": "an IP address", "ip_or_cidr": "an IP address or network", "host": "a host name or IP address",
             "identifier": "an identifier", "size": "a size like 512mb", "url": "an http(s) URL",
             "abspath": "an absolute path"}


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
