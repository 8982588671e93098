"""Who a run is (operator, controller, run id — in every lock and audit line), what it was
asked (`DeployRequest`), where it meets the world (`Boundaries`) and what it did.

Light on purpose: a deploy's first question (the plan record) needs it before anything heavy
is imported.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.secrets import Secret
from orchestrator.transport.base import TransportStats

if TYPE_CHECKING:  # the run's boundaries, by type only: this module stays light
    from orchestrator.config.project import Project
    from orchestrator.engine.consul import ConsulSync
    from orchestrator.facts.probes import ProbeNetwork
    from orchestrator.models.resolve import Resolution
    from orchestrator.transport.fleet import Fleet


def whoami() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class RunContext:
    """Who this run is, in every lock it takes and every audit line it writes."""

    run_id: str
    by: str
    action: str
    phases: tuple[int, ...]

    def holder(self) -> str:
        """The lock's holder record: enough to tell a stale lock (host + pid) from a live one."""
        return json.dumps({"by": self.by, "host": socket.gethostname(), "pid": os.getpid(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "phases": list(self.phases), "action": self.action, "run": self.run_id})


def new_run(by: str, action: str, phases: Sequence[int]) -> RunContext:
    return RunContext(run_id=secrets.token_hex(6), by=by, action=action, phases=tuple(phases))


@dataclass
class DeployResult:
    phases: tuple[int, ...]
    changed: dict[int, list[str]] = field(default_factory=dict)    # phase -> nodes that moved
    releases: dict[str, str] = field(default_factory=dict)         # node -> release now current
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)          # optional node -> why
    check_report: list[str] = field(default_factory=list)
    stats: dict[str, TransportStats] = field(default_factory=dict)

    @property
    def changed_nodes(self) -> list[str]:
        return sorted({n for nodes in self.changed.values() for n in nodes})


@dataclass(frozen=True)
class Boundaries:
    """Where a run meets the world, for a test to put its own: the nodes (a `Fleet`), Vault
    (secrets already read), Consul, the probes' network, the controller's state directory, the
    hub (its answers for the moving weights revisions).
    A real run leaves them all None."""

    fleet: Fleet | None = None
    secrets: Mapping[str, Secret] | None = None
    consul: ConsulSync | None = None
    network: ProbeNetwork | None = None
    state_dir: Path | None = None
    revisions: Resolution | None = None   # what the hub says each moving weights revision names


@dataclass
class DeployRequest:
    """`swarm deploy` as typed: enough to key the plan record without loading the project."""

    root: Path
    inventory: Path
    playbook: Path
    phase_text: str | None
    limit: str | None
    load: Callable[[], Project]
    check: bool = False
    diff: bool = False
    forks: int = 64
    skip_preflight: bool = False
    by: str = ""

    def key_args(self) -> list[str]:
        """The arguments the plan record's key covers (with the files: engine/record.py)."""
        return ["deploy", self.phase_text or "", self.limit or "", str(self.skip_preflight)]
