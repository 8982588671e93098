"""Commands as data: argv tuples quoted in one place (`to_shell`), batched into `Script`s."""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

Argv = tuple[str, ...]



def to_shell(argv: Sequence[str]) -> str:
    """Quote an argv for a POSIX shell: the ONE place swarm builds shell strings."""
    if not argv:
        raise ValueError("empty command")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"command arguments must be str, got {type(arg).__name__}")
        if "\0" in arg:
            raise ValueError("a command argument cannot contain a NUL byte")
    return shlex.join(argv)


@dataclass(frozen=True)
class Command:
    """One remote command; `mutates=False` marks it safe to run under `--check`."""

    argv: Argv
    mutates: bool = True
    label: str = field(default="", compare=False)  # a fixed script's name, for messages and tests

    def __post_init__(self) -> None:
        to_shell(self.argv)  # validates: non-empty, str only, no NUL

    @property
    def shell(self) -> str:
        return to_shell(self.argv)

    def describe(self) -> str:
        """How the command reads in tests and logs: a fixed script by its name and data
        (a label with a space in it is the whole description)."""
        if self.label and " " in self.label:
            return self.label
        if self.label and self.argv[:2] == ("sh", "-c") and len(self.argv) > 3:
            return " ".join([self.label, *map(_show, self.argv[4:])])
        return " ".join(map(_show, self.argv))

    def __str__(self) -> str:
        return self.shell


def read_only(*argv: str) -> Command:
    return Command(tuple(argv), mutates=False)


def mutating(*argv: str) -> Command:
    return Command(tuple(argv), mutates=True)


def sh(script: str, *args: str, mutates: bool, label: str = "") -> Command:
    """A fixed shell snippet with data only as positional parameters ($1, $2, ...)."""
    return Command(("sh", "-c", script, "sh", *args), mutates=mutates, label=label)


def _show(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=@,+%" for c in arg) else shlex.quote(arg)


# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class StepResult:
    """What one command of a `Script` did: exit status is None if it never finished."""

    command: Command
    exit_status: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class Script:
    """Several commands in one remote `sh -c`; stop at the first failure or run all."""

    commands: tuple[Command, ...]
    stop_on_error: bool = True
    nonce: str = field(default_factory=lambda: secrets.token_hex(8), compare=False)

    def __post_init__(self) -> None:
        if not self.commands:
            raise ValueError("empty script")

    @classmethod
    def of(cls, *commands: Command, stop_on_error: bool = True) -> Script:
        return cls(tuple(commands), stop_on_error=stop_on_error)

    @property
    def mutates(self) -> bool:
        return any(c.mutates for c in self.commands)

    def text(self) -> str:
        """The `sh` program: every command framed by begin/end markers."""
        body = "\n".join(self._framed(i, c) for i, c in enumerate(self.commands))
        return body + '\nexit "${__swarm_fail:-0}"\n'

    def to_command(self) -> Command:
        return Command(("sh", "-c", self.text()), mutates=self.mutates)

    @property
    def shell(self) -> str:
        return self.to_command().shell

    def split(self, stdout: str, stderr: str) -> tuple[StepResult, ...]:
        """Cut a batch's output back into one `StepResult` per command."""
        outs = dict(self._sections(stdout, with_status=True))
        errs = dict(self._sections(stderr, with_status=False))
        return tuple(self._step(i, c, outs, errs) for i, c in enumerate(self.commands))

    def _framed(self, index: int, command: Command) -> str:
        begin = f"{self.nonce}:{index}:b"
        parts = [
            to_shell(("printf", "%s\\n", begin)),
            to_shell(("printf", "%s\\n", begin)) + " >&2",
            command.shell,
            "__swarm_rc=$?",
            to_shell(("printf", "\\n%s:%d:e:%d\\n", self.nonce, str(index))) + ' "$__swarm_rc"',
            to_shell(("printf", "\\n%s:%d:e\\n", self.nonce, str(index))) + " >&2",
        ]
        on_error = (
            'exit "$__swarm_rc"'
            if self.stop_on_error
            else "__swarm_fail=${__swarm_fail:-$__swarm_rc}"
        )
        parts.append(f'[ "$__swarm_rc" -eq 0 ] || {on_error}')
        return "; ".join(parts)

    def _sections(
        self, text: str, *, with_status: bool
    ) -> list[tuple[int, tuple[str, int | None]]]:
        nonce = re.escape(self.nonce)
        end = r":(\d+)" if with_status else "()"
        pattern = re.compile(rf"{nonce}:(\d+):b\n(.*?)(?:\n{nonce}:\1:e{end}\n|\Z)", re.S)
        found = []
        for m in pattern.finditer(text):
            status = int(m.group(3)) if with_status and m.group(3) else None
            found.append((int(m.group(1)), (m.group(2), status)))
        return found

    @staticmethod
    def _step(
        index: int,
        command: Command,
        outs: dict[int, tuple[str, int | None]],
        errs: dict[int, tuple[str, int | None]],
    ) -> StepResult:
        stdout, status = outs.get(index, ("", None))
        return StepResult(command, status, stdout, errs.get(index, ("", None))[0])


Runnable = Command | Script | Argv


def as_command(item: Runnable) -> Command:
    """Normalise what a transport accepts; a bare argv tuple counts as mutating."""
    if isinstance(item, Command):
        return item
    if isinstance(item, Script):
        return item.to_command()
    return Command(tuple(item), mutates=True)


def mutates(item: Runnable) -> bool:
    return item.mutates if isinstance(item, Command | Script) else True

