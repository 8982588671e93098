"""Text that is safe to show or to write: which characters never belong in a value, and how
to print a value whatever it holds.

Values of settings and names go into config files, command lines and terminals. A control
character (a newline starts a new directive, NUL ends a C string, ESC drives the terminal),
a Unicode line or paragraph separator (a line break to YAML 1.1), a lone surrogate (not
text at all) or a bidirectional override (U+202E shows `cfg.txt` for `txt.gfc`) never
means what it seems to, so values refuse them (`unsafe_char`) — secrets excepted, which
never reach a terminal and go to env files with their own quoting. Whatever reaches a
terminal or a log anyway (a node's answer, a file that is not a project's) is shown with
those characters escaped (`printable`).
"""

from __future__ import annotations

import unicodedata

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def is_unsafe(char: str) -> bool:
    return char in BIDI_CONTROLS or char == "\ufeff" or unicodedata.category(char) in _REFUSED_CATEGORIES


def unsafe_char(text: str) -> str | None:
    """The first character of `text` that no value may hold (None: every one is fine)."""
    if text.isascii() and text.isprintable():
        return None
    return next((c for c in text if is_unsafe(c)), None)


_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL byte",
          "\x1b": "an escape (ESC)", "\x7f": "DEL"}


def describe_char(char: str) -> str:
    name = _NAMES.get(char) or unicodedata.name(char, "").lower() or "a control character"
    return f"U+{ord(char):04X} ({name})"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every unsafe character escaped (`\\x1b`, `\\u202e`); newlines and tabs kept
    when `keep_newlines` (a message of several lines)."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(c) if is_unsafe(c) and not (keep_newlines and c in "\n\t") else c for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
