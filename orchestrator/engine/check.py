"""`swarm deploy --check [--diff]`: what a deploy would do, with nothing changed.

Per phase and node, from the plan made of what the node said (read-only: the look takes no
lock under --check): "no changes", or the release it would get and why each service would
be applied; a lock someone holds is noted. With --diff, a unified diff of every rendered
file against the node's current release, env files masked: names show, values never —
not even the continuation lines of a value that spans several lines.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from orchestrator import commands as cmd
from orchestrator.engine.plan import NodeChange
from orchestrator.engine.session import Session
from orchestrator.events import EventBus
from orchestrator.facts.node import NodeState, describe_holder
from orchestrator.secrets import MASK, scrub

_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=(.*)")


async def check_report(session: Session, changes: Sequence[NodeChange], diff: bool, bus: EventBus) -> list[str]:
    report: list[str] = []
    for change in changes:
        name, state = change.node.name, session.states[change.node.name]
        where = f"{name}: phase {change.phase.id}"
        if not change.changed:
            report.append(f"{where}: no changes (release {state.current_id})")
            bus.emit("check", "unchanged", host=name, phase=change.phase.id)
            continue
        report.append(f"{where}: would deploy a new release: {change.summary()}")
        bus.emit("check", "changed", host=name, phase=change.phase.id, message=f"would apply {change.summary()}")
        if state.lock.held_by:
            report.append(f"{where}: note: the lock is held by {describe_holder(state.lock.held_by)}")
        if diff:
            report.extend(await diff_lines(session, change, state))
    moving = len({c.node.name for c in changes if c.changed})
    bus.emit("run", "ok", message=f"check: {moving} node(s) would change, nothing was modified")
    return report


async def diff_lines(session: Session, change: NodeChange, state: NodeState) -> list[str]:
    node = change.node
    old: dict[str, str] = {}
    paths = sorted(change.content.files)
    if state.current_id:
        root = f"{node.deploy_root}/current"
        result = await session.fleet[node.name].run(
            cmd.Script.of(*(cmd.read_file(f"{root}/{p}") for p in paths), stop_on_error=False), check=False)
        for path, step in zip(paths, result.steps, strict=False):
            body = cmd.parse_read_file(step.stdout) if step.ok else None
            if body is not None:
                old[path] = body
    lines: list[str] = []
    for path, data in change.content.files.items():
        new, before = data.decode(), old.get(path, "")
        if path.startswith("env/"):
            new, before = mask_env(new), mask_env(before)
        if new != before:
            lines.extend(difflib.unified_diff(before.splitlines(), new.splitlines(), f"{node.name}:current/{path}",
                                              f"{node.name}:new/{path}", lineterm=""))
    return [scrub(line) for line in lines]


def mask_env(text: str) -> str:
    """An env file for --diff: `KEY=********` per assignment, comments and blank lines as they
    are, and nothing else — a quoted value that runs over several lines shows none of them."""
    out: list[str] = []
    quote: str | None = None
    for line in text.splitlines():
        if quote is not None:  # inside a value that started on an earlier line
            quote = None if _closes(line, quote) else quote
            continue
        match = _ASSIGNMENT.fullmatch(line)
        if match is None:
            if not line.strip() or line.lstrip().startswith("#"):
                out.append(line)
            continue
        out.append(f"{match.group(1)}={MASK}")
        value = match.group(2).lstrip()
        if value[:1] in ("'", '"') and not _closes(value[1:], value[0]):
            quote = value[0]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _closes(text: str, quote: str) -> bool:
    """Whether `text` holds the closing quote (a double quote may be escaped)."""
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quote == '"':
            escaped = True
        elif char == quote:
            return True
    return False
