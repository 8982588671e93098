"""An unwind that has not finished yet, kept on the controller so that it can be finished.

While a phase changes nodes, the runner keeps here, per node, exactly what its unwind would
run (argv lists — data only, never a secret) and the Consul registrations it would put
back. The record is replaced after every step and removed when the phase commits or its
unwind completes. If swarm is stopped mid-unwind (a second signal), killed, or a node is
unreachable, the record stays: `swarm rollback --resume` (and any later deploy or
rollback of those nodes, before it does anything else) finishes the job from it.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.commands import Command
from orchestrator.errors import InputError
from orchestrator.facts.node import is_stale


@dataclass
class PendingNode:
    node: str
    undo: list[list[str]] = field(default_factory=list)   # argv of each undo command, in order
    restore: list[str] = field(default_factory=list)      # services to re-gate afterwards
    failed_release: str | None = None
    previous: str | None = None
    undone: bool = False      # the undo ran; what it restored still needs its re-check

    def commands(self) -> list[Command]:
        return [Command(tuple(argv), mutates=True) for argv in self.undo]


@dataclass
class Pending:
    run_id: str
    by: str
    action: str
    phase: int
    reason: str = ""
    nodes: dict[str, PendingNode] = field(default_factory=dict)
    consul: list[list[Any]] = field(default_factory=list)  # [service id, registration record | None]
    pid: int = 0      # the run that wrote it: a record of a run that is still alive is not "cut off"
    host: str = ""

    def still_running(self) -> bool:
        """The run that wrote this record is alive on this controller (it is unwinding or
        deploying now): nobody else may finish its unwind — it would adopt that run's lock."""
        if not self.pid or self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        return not is_stale({"pid": self.pid, "host": self.host}, self.host)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Pending:
        data = json.loads(text)
        nodes = {k: PendingNode(**v) for k, v in data.pop("nodes", {}).items()}
        return cls(nodes=nodes, **data)


class PendingStore:
    """One file per fleet in the controller's state directory, written atomically (0600)."""

    def __init__(self, state_dir: Path, fleet: str) -> None:
        self.path = state_dir / f"pending-unwind-{fleet}.json"

    def load(self) -> Pending | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            return Pending.from_json(text)
        except (ValueError, TypeError, KeyError):
            raise InputError(f"{self.path} is not a pending-unwind record",
                             hint="look at it, then remove it by hand if it is stale") from None

    def save(self, pending: Pending) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pending-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(pending.to_json())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
