"""The base model and the value types every loader shares.

Models are strict (a boolean is not a number, a number is not a string), frozen, reject
unknown keys and non-finite numbers. The annotated types below carry the form of values
that reach a shell, a file name, a port or a URL: each one refuses what could escape its
place (`..`, a leading `-`, control characters, shell metacharacters) with a message that
says what is allowed. Patterns are matched with `fullmatch`: `$` would accept a trailing
newline.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from orchestrator.text import unsafe_char


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# ---------------------------------------------------------------- durations

_DURATION = re.compile(r"(?:(\d{1,9}(?:\.\d{1,9})?)h)?(?:(\d{1,9}(?:\.\d{1,9})?)m(?!s))?"
                       r"(?:(\d{1,9}(?:\.\d{1,9})?)s)?(?:(\d{1,9})ms)?")
MAX_DURATION_S = 30 * 24 * 3600.0


def parse_duration(value: Any) -> float:
    """Seconds from 90, 90.5, "90s", "15m", "1h30m", "500ms" (finite, at most 30 days)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())) and any(match.groups()):
        h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s + ms / 1000
    else:
        shown = f'"{value[:40]}"' if isinstance(value, str) else repr(value)[:40]
        raise ValueError(f"expected a duration like 30s, 5m or 1h, got {shown}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration is a finite number of seconds, at least 0, got {value!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"a duration of more than 30 days is surely a mistake, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Interval = Annotated[float, BeforeValidator(parse_duration), Field(ge=0.1)]
"""A period something repeats at (a check, a probe's timeout): at least 0.1 s, never a busy loop."""
ConsulInterval = Annotated[float, BeforeValidator(parse_duration), Field(ge=1.0)]
"""Consul runs a check at most once a second (it raises shorter intervals to 1s itself)."""


# ---------------------------------------------------------------- names

NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "use lowercase letters, digits, '-' and '_' (at most 63, starting with a letter or digit)"


def is_name(value: str) -> bool:
    return NAME_RE.fullmatch(value) is not None


def _name(value: str) -> str:
    if not is_name(value):
        raise ValueError(f"names {NAME_RULE}, got {quoted(value)}")
    return value


Name = Annotated[str, AfterValidator(_name)]

_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def is_env_name(value: str) -> bool:
    return _ENV.fullmatch(value) is not None


def _env_name(value: str) -> str:
    if not is_env_name(value):
        raise ValueError(f"environment variable names use letters, digits and '_', not starting with "
                         f"a digit, got {quoted(value)}")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]

_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def _user(value: str) -> str:
    if not _USER.fullmatch(value):
        raise ValueError(f"not a user name (letters, digits, '_', '.', '-'; not starting with '-' or a "
                         f"digit; at most 32), got {quoted(value)}")
    return value


UserName = Annotated[str, AfterValidator(_user)]


# ---------------------------------------------------------------- addresses

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def is_ip(value: str) -> bool:
    """An IPv4 or IPv6 address, without a zone id (`fe80::1%eth0`): a zone is local to one
    machine's interfaces, and its text (`%-oProxyCommand=...`) reaches ssh, URLs and configs."""
    if "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_hostname(value: str) -> bool:
    """A DNS name of RFC 1123 labels whose last label is not all digits (RFC 3696 2: `1.2.3.4.5`
    is neither a name nor an address)."""
    if len(value) > 253 or _HOSTNAME.fullmatch(value) is None:
        return False
    return not value.rstrip(".").rsplit(".", 1)[-1].isdigit()


def is_host(value: str) -> bool:
    """A DNS name (RFC 1123 labels) or an IPv4/IPv6 address; nothing a shell or ssh would parse."""
    return is_ip(value) or is_hostname(value)


def _host(value: str) -> str:
    if not is_host(value):
        raise ValueError(f"not a host name or IP address (IPv6 without a %zone), got {quoted(value)}")
    if is_ip(value) and ipaddress.ip_address(value).is_unspecified:  # Consul refuses it, ssh cannot reach it
        raise ValueError(f"{value} means every address, not one machine: give the node's own address")
    return value


Host = Annotated[str, AfterValidator(_host)]


def _ip(value: str) -> str:
    if not is_ip(value):
        raise ValueError(f"not an IP address (IPv6 without a %zone), got {quoted(value)}")
    return value


IpAddress = Annotated[str, AfterValidator(_ip)]

_URL = re.compile(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?(/[A-Za-z0-9._~/%-]*)?")


def is_http_url(value: str) -> bool:
    """http(s)://host[:port][/path]; an IPv6 host in brackets, a bare one (ambiguous) refused."""
    match = _URL.fullmatch(value)
    if not match:
        return False
    host = match.group(2)
    bracketed = host.startswith("[")
    if bracketed and not is_ip(host[1:-1]) or not bracketed and not is_hostname(host) and not _is_ipv4(host):
        return False
    port = match.group(3)
    return port is None or (1 <= int(port) <= 65535 and not (len(port) > 1 and port.startswith("0")))


def _is_ipv4(value: str) -> bool:
    return is_ip(value) and ":" not in value


def _url(value: str) -> str:
    if not is_http_url(value):
        raise ValueError(f"not an http(s) URL like http://10.0.0.1:8200 (an IPv6 host in brackets), "
                         f"got {quoted(value)}")
    return value


HttpUrl = Annotated[str, AfterValidator(_url)]

Port = Annotated[int, Field(ge=1, le=65535)]


# ---------------------------------------------------------------- paths

_SEGMENT = re.compile(r"[A-Za-z0-9_@+=,-][A-Za-z0-9._@+=,-]{0,254}")


def relative_path_problem(value: str) -> str | None:
    """Why `value` is not a plain relative path inside its root (None if it is one)."""
    if not value:
        return "an empty path"
    if value.startswith("/"):
        return "an absolute path"
    parts = value.split("/")
    if ".." in parts:
        return "a path that leaves its directory ('..')"
    if posixpath.normpath(value) != value:
        return "a path that is not normalised (use a/b, not a//b, ./a or a/)"
    bad = next((p for p in parts if not _SEGMENT.fullmatch(p)), None)
    if bad is not None:
        return f"a path with an unusual name {quoted(bad)} (letters, digits and ._@+=,- only)"
    return None


def _relative(value: str) -> str:
    problem = relative_path_problem(value)
    if problem:
        raise ValueError(f"expected a relative path inside its directory, got {problem}: {quoted(value)}")
    return value


RelPath = Annotated[str, AfterValidator(_relative)]


def _absolute(value: str) -> str:
    rest = value[1:]
    if not value.startswith("/") or not rest or relative_path_problem(rest):
        raise ValueError(f"expected an absolute, normalised directory like /opt/ai-swarm (not '/'; "
                         f"letters, digits and ._@+=,- only), got {quoted(value)}")
    return value


AbsDir = Annotated[str, AfterValidator(_absolute)]


def _text(value: str) -> str:
    bad = unsafe_char(value.replace("\t", " "))
    if bad is not None:
        raise ValueError(f"control and bidirectional characters (newlines included) are not allowed here, "
                         f"got {quoted(value)}")
    return value


Line = Annotated[str, AfterValidator(_text)]
"""One line of text: no newline, no control character."""


def _nonempty_line(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return _text(value)


NonEmptyLine = Annotated[str, AfterValidator(_nonempty_line)]


def quoted(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, str) else value
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} characters)"
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
