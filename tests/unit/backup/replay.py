"""Replayed nodes for the backup data tests, answering what the lab answered (fixtures/*.yml,
recorded by fixtures/record.py); a test changes only what it is about (a lock held, a dump
that fails), so formats stay the node's own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from orchestrator.commands import Command, Runnable, Script, as_command
from orchestrator.transport.base import Result
from orchestrator.transport.replay import Answer, ReplayTransport, Reply, key_of

FIXTURES = Path(__file__).parent / "fixtures"
# The order record.py backed up each node's services in (the playbook's): the Nth answer of a
# per-service label (backup-prepare, backup-sums, backup-commit) belongs to the Nth service.
ORDER = {"oracle": ("vault", "postgres", "redis"), "starlord": ("qdrant",)}
PER_SERVICE = ("backup-prepare", "backup-sums", "backup-commit")


@cache
def recorded(node: str) -> dict[str, list[dict[str, Any]]]:
    data: dict[str, list[dict[str, Any]]] = yaml.safe_load((FIXTURES / f"{node}.yml").read_text())
    return data


def answers(node: str, label: str) -> list[Answer]:
    return [Answer(a["exit"], a["stdout"], a["stderr"]) for a in recorded(node)[label]]


def first_listing(node: str) -> Answer:
    """The node's backups as the recorded run found them when it started."""
    return answers(node, "list-backups")[0]


@dataclass
class FileNode(ReplayTransport):
    """A replayed node that also holds files: `get` reads them, `put` writes them (the copy of a
    backup to another node goes through these two)."""

    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    key_trips: list[list[str]] = field(default_factory=list)   # each run: its commands' labels

    async def run(self, command: Runnable, *, timeout: float | None = None, check: bool = True,
                  input: bytes | None = None) -> Result:
        commands = command.commands if isinstance(command, Script) else (as_command(command),)
        if not self.dead:
            self.key_trips.append([key_of(c) for c in commands])
        return await super().run(command, timeout=timeout, check=check, input=input)

    async def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        self.files[remote_path], self.modes[remote_path] = data, mode

    async def get(self, remote_path: str) -> bytes:
        return self.files[remote_path]


def per_service(name: str, label: str) -> Callable[[Command], Answer]:
    """The recorded answer of the service whose backup directory the command names."""
    recorded_answers = answers(name, label)

    def reply(command: Command) -> Answer:
        service = command.argv[4].rstrip("/").split("/backups/", 1)[1].split("/", 1)[0]
        return recorded_answers[ORDER[name].index(service)]

    return reply


def node(name: str, **changes: Reply) -> FileNode:
    """`name` answering as recorded, with some labels answered otherwise."""
    replies: dict[str, Reply] = {label: answers(name, label) for label in recorded(name)}
    replies.update({label: per_service(name, label) for label in PER_SERVICE if label in recorded(name)})
    replies.update(changes)
    return FileNode(name=name, replies=replies)


def trips(transport: FileNode) -> list[list[str]]:
    """Each round trip as the labels of its commands."""
    return transport.key_trips
