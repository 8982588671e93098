"""A phase selector, as `--phase` takes it: a phase number, a range or a list — nothing else.

`3`, `2-4`, `2,4`, `1-2,4`. No selector at all means every phase; an empty one (`--phase
''`), a word (`all`) or a range that runs backwards is bad input (exit 2), never "every
phase" by accident: `swarm rollback --phase ''` must not roll back the whole fleet. The
syntax is checked here, before the project loads (the CLI does it as it parses); which
phases exist is the selection's question (`parse_phases` in `engine/selection.py`).
"""

from __future__ import annotations

import re

from orchestrator.errors import InputError

_SELECTOR = re.compile(r"\s*\d{1,6}(\s*-\s*\d{1,6})?(\s*,\s*\d{1,6}(\s*-\s*\d{1,6})?)*\s*")
EXPECTED = "expected a phase number, a range like 2-4, or a list like 2,4"


def ranges(text: str) -> tuple[tuple[int, int], ...]:
    """The selector's (first, last) ranges, in the order written; bad input raises."""
    if not _SELECTOR.fullmatch(text):
        raise InputError(f"--phase {text!r}: {EXPECTED}")
    out = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        lo, hi = int(first), int(last or first)
        if hi < lo:
            raise InputError(f"--phase {text!r}: range {lo}-{hi} runs backwards")
        out.append((lo, hi))
    return tuple(out)


def one_phase(text: str | None, command: str) -> int:
    """A command that acts on exactly one phase (`rollback`): its number, or bad input."""
    if text is None:
        raise InputError(f"say which phase to {command}: --phase N (a {command} is per phase)")
    found = ranges(text)
    if len(found) != 1 or found[0][0] != found[0][1]:
        raise InputError(f"--phase {text!r}: a {command} is per phase: name exactly one, like --phase 3")
    return found[0][0]
