"""The one fake: a node that answers from a script, at the SSH boundary.

`ReplayTransport` records every command it is sent and answers each with what the test
scripted for it, found by the command's label (`commands.*` builders name their fixed
scripts: `look-lock`, `container-states`, ...) or, for plain argv, its first words
(`docker compose`, `date`). The answers themselves are recorded from the lab
(tests/unit/fixtures/lab/), so engine logic is tested as data — facts in, commands out —
with the same `Script` framing and per-step results as over SSH, and no network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.commands import Command, Runnable, Script, StepResult, as_command
from orchestrator.errors import TransportError
from orchestrator.transport.base import Result, TransportStats, check_result, describe


@dataclass(frozen=True)
class Answer:
    exit_status: int | None = 0
    stdout: str = ""
    stderr: str = ""


Reply = Answer | Sequence[Answer] | Callable[[Command], Answer]


def key_of(command: Command) -> str:
    """How a command is looked up in the script: its label, else its program (and verb)."""
    if command.label:
        words = command.label.split(" ", 2)
        # a step that runs only where the run holds the lock answers as the step it guards
        return words[1] if words[0] == "if-locked" and len(words) > 1 else words[0]
    argv = command.argv
    if argv[:2] == ("docker", "compose"):
        verb = next((a for a in argv[2:] if a in {"up", "rm", "ps", "config", "version"}), "")
        return f"compose-{verb}" if verb else "compose"
    return argv[0]


@dataclass
class ReplayTransport:
    """Answers from `replies` (key -> answer, list of answers used in turn, or a function)."""

    name: str
    replies: dict[str, Reply] = field(default_factory=dict)
    fail_on: dict[str, int] = field(default_factory=dict)   # key -> fail the Nth such command (1-based)
    dead: bool = False                                       # the link is down: every run raises
    drop_on: dict[str, int] = field(default_factory=dict)   # key -> the link drops during the Nth such
    #                                                         command (that run raises; a reconnect works)
    dropped: bool = False
    sent: list[Command] = field(default_factory=list)
    inputs: list[bytes | None] = field(default_factory=list)
    round_trips: list[list[str]] = field(default_factory=list)  # each run: its commands, described
    _stats: TransportStats = field(default_factory=TransportStats)
    _counts: dict[str, int] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.name

    @property
    def stats(self) -> TransportStats:
        return self._stats

    @property
    def is_connected(self) -> bool:
        return not self.dead and not self.dropped

    async def connect(self) -> None:
        if self.dead:
            raise TransportError(self.name, "cannot reach the node (replay: link down)")
        if self.dropped:
            self.dropped = False
            self._stats.connections += 1
        self._stats.connections = max(self._stats.connections, 1)

    async def run(self, command: Runnable, *, timeout: float | None = None, check: bool = True,
                  input: bytes | None = None) -> Result:
        if self.dead:
            raise TransportError(self.name, "connection lost (replay: link down)")
        if self.dropped:
            raise TransportError(self.name, "connection lost (replay: the link dropped; reconnect first)")
        commands = command.commands if isinstance(command, Script) else (as_command(command),)
        for cmd in commands:
            key = key_of(cmd)
            if key in self.drop_on and self._counts.get(key, 0) + 1 == self.drop_on[key]:
                self._counts[key] = self._counts.get(key, 0) + 1
                self.round_trips.append([c.describe() for c in commands] + ["(link dropped)"])
                self.dropped = True
                raise TransportError(self.name, "connection lost: the session ended mid-command (replay)")
        stop = command.stop_on_error if isinstance(command, Script) else True
        self._stats.count_command(describe(command), len(input or b""), 0)
        self.inputs.append(input)
        self.round_trips.append([c.describe() for c in commands])
        steps: list[StepResult] = []
        first_failure: int | None = None
        for cmd in commands:
            if first_failure is not None and stop:  # the script stopped: later steps never ran
                steps.append(StepResult(cmd, None, "", ""))
                continue
            self.sent.append(cmd)
            answer = self._answer(cmd)
            steps.append(StepResult(cmd, answer.exit_status, answer.stdout, answer.stderr))
            if answer.exit_status != 0 and first_failure is None:
                first_failure = answer.exit_status if answer.exit_status is not None else -1
        result = Result(first_failure or 0, "".join(s.stdout for s in steps),
                        "".join(s.stderr for s in steps), describe(command),
                        tuple(steps) if isinstance(command, Script) else ())
        return check_result(self.name, result) if check else result

    def _answer(self, command: Command) -> Answer:
        key = key_of(command)
        count = self._counts[key] = self._counts.get(key, 0) + 1
        if self.fail_on.get(key) == count:
            return Answer(1, "", f"replay: {key} failed (as the test staged)")
        reply = self.replies.get(key, Answer())
        if callable(reply):
            return reply(command)
        if isinstance(reply, Answer):
            return reply
        return reply[min(count, len(reply)) - 1]

    async def forward_local(self, port: int) -> int:
        """The node's loopback port as the test's probe network sees it (no round trip)."""
        if self.dead or self.dropped:
            raise TransportError(self.name, "connection lost (replay: link down)")
        return port

    async def exchange_unix(self, path: str, data: bytes, *, timeout: float | None = None) -> bytes:
        """A unix socket on the node (HAProxy's runtime API): recorded as one round trip
        `unix-socket PATH COMMAND`, answered from the replies under `unix-socket`."""
        if self.dead or self.dropped:
            raise TransportError(self.name, "connection lost (replay: link down)")
        text = data.decode().strip()
        command = Command(("unix-socket", path, text), mutates=True, label=f"unix-socket {path} {text}")
        self.round_trips.append([command.describe()])
        self.sent.append(command)
        answer = self._answer(command)
        if answer.exit_status != 0:
            raise ConnectionRefusedError(f"{path}: {answer.stderr or 'refused'} (replay)")
        return answer.stdout.encode()

    async def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        raise TransportError(self.name, "replay transport: put is not used by the engine")

    async def get(self, remote_path: str) -> bytes:
        raise TransportError(self.name, "replay transport: get is not used by the engine")

    async def close(self) -> None:
        return None

    def described(self, keys: set[str] | None = None) -> list[str]:
        """Every command sent, as tests read them (`Command.describe`), optionally only some kinds."""
        return [c.describe() for c in self.sent if keys is None or key_of(c) in keys]


def replies_of(table: Mapping[str, Reply]) -> dict[str, Reply]:
    return dict(table)
