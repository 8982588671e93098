"""Secret values that never print.

A `Secret` wraps a value read from Vault or an env file. Its repr/str/format are
masked; the only way to the value is `reveal()`, which callers use exactly where the
value must leave the process (an env file body uploaded to a node, a Vault write).
`SecretRegistry` remembers every value seen in this process so that any text leaving
swarm (logs, events, errors, diffs, audit) can be scrubbed as a last line of defence.

The scrubber masks each value in every form it takes on its way out: as is, JSON-escaped
(`"` -> `\\"`, non-ASCII -> `\\u00e9`, as `json.dumps` writes it, with or without
`ensure_ascii`), as Python's repr escapes it, shell-quoted, and env-file quoted. Values
of at least `MIN_LEN` characters are masked wherever they occur; shorter ones only as a
whole token (not inside a longer word), so that a 3-character secret is still masked in
`password=abc` without shredding every word that contains "abc". `scrub_data` does the
same for structured data (event payloads) before it is serialised.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from collections.abc import Iterable
from typing import Any

MASK = "********"


class Secret:
    __slots__ = ("_value", "name")

    def __init__(self, value: str, name: str = "secret") -> None:
        self._value = value
        self.name = name
        REGISTRY.remember(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name}={MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values cannot be pickled")


def env_quote(value: str) -> str:
    """A value as compose's env_file syntax carries it byte for byte (render/release.py).

    Without `'`, `\\`, CR or LF: single-quoted, which compose takes literally (`$` too).
    Otherwise double-quoted with `\\`, `"`, `$`, LF and CR escaped.
    """
    if not any(c in value for c in "'\\\n\r"):
        return f"'{value}'"
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
               .replace("\n", "\\n").replace("\r", "\\r"))
    return f'"{escaped}"'


def encodings(value: str) -> set[str]:
    """The forms a value takes in text swarm writes: raw, JSON, repr, shell and env-file quoted."""
    quoted = (shlex.quote(value), env_quote(value))
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             repr(value)[1:-1], *(q[1:-1] if q[:1] in "'\"" and q[-1:] == q[:1] else q for q in quoted)}
    return {f for f in forms if f}


class SecretRegistry:
    """Every secret value this process has seen, for scrubbing outgoing text."""

    MIN_LEN = 4  # shorter values are masked only as whole tokens

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def remember(self, value: str) -> None:
        if not value:
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._pattern = None

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                self._pattern = _pattern(self._values, self.MIN_LEN)
            return self._pattern

    def scrub(self, text: str) -> str:
        pattern = self._compiled()
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None


def _pattern(values: set[str], min_len: int) -> re.Pattern[str]:
    long_forms: set[str] = set()
    short_forms: set[str] = set()
    for value in values:
        for form in encodings(value):
            (long_forms if len(value) >= min_len else short_forms).add(form)
    parts = [re.escape(f) for f in sorted(long_forms, key=len, reverse=True)]
    parts += [rf"(?<![\w]){re.escape(f)}(?![\w])" for f in sorted(short_forms, key=len, reverse=True)]
    return re.compile("|".join(parts))


REGISTRY = SecretRegistry()


def scrub(text: str) -> str:
    """Mask every known secret value in `text`."""
    return REGISTRY.scrub(text)


def scrub_data(value: Any) -> Any:
    """`value` (dicts, lists, strings, Secrets) with every known secret masked, for event data."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_data(k) if isinstance(k, str) else k: scrub_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_data(v) for v in value)
    return value


def reveal_all(secrets: Iterable[Secret]) -> list[str]:
    return [s.reveal() for s in secrets]
