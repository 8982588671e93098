"""Secret values that never print.

A `Secret` wraps a value read from Vault or an env file. Its repr/str/format are
masked; the only way to the value is `reveal()`, which callers use exactly where the
value must leave the process (an env file body uploaded to a node, a Vault write).
`SecretRegistry` remembers every value seen in this process so that any text leaving
swarm (logs, events, errors, diffs, audit) can be scrubbed as a last line of defence.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

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


class SecretRegistry:
    """Every secret value this process has seen, for scrubbing outgoing text."""

    MIN_LEN = 4  # shorter values would mask ordinary words

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def remember(self, value: str) -> None:
        if len(value) >= self.MIN_LEN:
            with self._lock:
                self._values.add(value)

    def scrub(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


REGISTRY = SecretRegistry()


def scrub(text: str) -> str:
    """Mask every known secret value in `text`."""
    return REGISTRY.scrub(text)


def reveal_all(secrets: Iterable[Secret]) -> list[str]:
    return [s.reveal() for s in secrets]
