"""Node steps as data: each plans one command (a `Script`) and knows its undo.

A step never touches a transport; the runner executes it, journals the answer and, if the
run fails later, runs `undo_for(answer)` in reverse order of the steps. Steps of a phase:

* **apply** — clear stale uploads, unpack the release (`.tmp-<id>` -> `releases/<id>`),
  carry the other phases' env files over, make the infrastructure, note the node's clock,
  then `docker compose up` the changed services (and `rm` the ones the playbook dropped).
  Undo: remove the services that are new, bring the changed ones back from the previous
  release's compose file, delete the new release. If the answer shows compose never ran
  (a full disk during the upload), only the upload is removed.
* **switch** — point `current` at the release, append the node's audit log, prune old
  releases (never the previous one), release the lock (the session's command) when nothing
  else follows on the node. Undo: `current` back to the previous release (or gone, after a first deploy).

Protected services are never named in a compose command of any step or undo.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator import commands as cmd
from orchestrator.commands import Command, Script
from orchestrator.config.inventory import Node
from orchestrator.secrets import scrub
from orchestrator.transport.base import Result


@dataclass(frozen=True)
class NodeStep:
    """One command on one node, with what takes it back."""

    name: str
    node: str
    script: Script
    input: bytes | None = None
    undo: tuple[Command, ...] = ()            # after the step ran, or may have
    undo_unstarted: tuple[Command, ...] = ()  # when it stopped before command `touches_from`
    touches_from: int | None = None           # first command that changes containers or `current`
    summary: str = ""                         # what it does, for events ("up: haproxy")

    def undo_for(self, result: Result | None) -> tuple[Command, ...]:
        """What takes this step back, given what its answer shows (None: no answer at all)."""
        if result is None or self.touches_from is None:
            return self.undo
        steps = result.steps
        if self.touches_from < len(steps) and steps[self.touches_from].exit_status is None:
            return self.undo_unstarted
        return self.undo

    def touched(self, result: Result | None) -> bool:
        """Whether the step may have changed containers or `current` (what an undo restores)."""
        return self.touches_from is not None and self.undo_for(result) == self.undo

    def describe(self) -> list[str]:
        return [c.describe() for c in self.script.commands]


@dataclass(frozen=True)
class Restore:
    """Which services an undo brings back (to re-gate them) and which it removes."""

    back: tuple[str, ...]
    removed: tuple[str, ...]


def compose_file(node: Node, release: str) -> str:
    return f"{node.deploy_root}/releases/{release}/compose.yml"


@dataclass(frozen=True)
class ApplyHooks:
    """What a rollout adds to the apply step (engine/rollout.py): commands around `compose up`
    and around its undo, and which of the applied services compose itself brings up (the
    others are reloaded in place, or swapped one at a time after the step)."""

    before_up: tuple[Command, ...] = ()
    after_up: tuple[Command, ...] = ()
    undo_before: tuple[Command, ...] = ()
    undo_after: tuple[Command, ...] = ()
    up: tuple[str, ...] | None = None


def apply_step(node: Node, release: str, *, previous: str | None, previous_applied: dict[str, str],
               to_apply: Sequence[str], to_remove: Sequence[str] = (), tar: bytes,
               directories: Sequence[str] = (), network: tuple[str, str] | None = None,
               carry_env: bool = True, build: Sequence[Command] = (),
               hooks: ApplyHooks = ApplyHooks()) -> NodeStep:
    """Upload + apply in one command (see the module docstring).

    `build` replaces the plain unpack for a release assembled on the node (a rollback
    copies the current release and takes some services from an older one first).
    """
    root, project = node.deploy_root, node.project
    commands: list[Command] = [cmd.remove_stale_tmp(root), *build, cmd.extract_release(root, release)]
    if previous and carry_env:
        commands.append(cmd.carry_env_files(f"{root}/current", f"{root}/releases/{release}"))
    if directories:
        commands.append(cmd.mkdir_p(*(f"{root}/{d}" for d in directories)))
    if network is not None:
        commands.append(cmd.network_create(*network))
    commands.append(cmd.node_clock())
    touches = len(commands)
    commands.extend(hooks.before_up)
    if to_remove and previous:
        commands.append(cmd.compose_remove(project, compose_file(node, previous), list(to_remove)))
    up = list(to_apply if hooks.up is None else hooks.up)
    if up:
        commands.append(cmd.compose_up(project, compose_file(node, release), up))
    commands.extend(hooks.after_up)
    restore = restore_of(previous, previous_applied, to_apply, to_remove)
    undo = [*hooks.undo_before, *_undo_services(node, release, previous, restore), *hooks.undo_after,
            cmd.remove_release(root, release)]
    summary = ", ".join([*(f"up {s}" for s in to_apply), *(f"rm {s}" for s in to_remove)]) or "infrastructure"
    return NodeStep(name="apply", node=node.name, script=Script.of(*commands), input=tar,
                    undo=tuple(undo), undo_unstarted=(cmd.remove_release(root, release),),
                    touches_from=touches if touches < len(commands) else None, summary=summary)


def restore_of(previous: str | None, previous_applied: dict[str, str], to_apply: Sequence[str],
               to_remove: Sequence[str]) -> Restore:
    """Undoing an apply: services that ran before come back, the new ones go."""
    back = [s for s in to_apply if previous and s in previous_applied] + list(to_remove if previous else ())
    new = [s for s in to_apply if not (previous and s in previous_applied)]
    return Restore(back=tuple(back), removed=tuple(new))


def _undo_services(node: Node, release: str, previous: str | None, restore: Restore) -> list[Command]:
    out: list[Command] = [cmd.node_clock()] if restore.removed or (restore.back and previous) else []
    if restore.removed:
        out.append(cmd.compose_remove(node.project, compose_file(node, release), list(restore.removed)))
    if restore.back and previous:
        out.append(cmd.compose_up(node.project, compose_file(node, previous), list(restore.back)))
    return out


def switch_step(node: Node, release: str, *, previous: str | None, audit: bytes,
                prune: Sequence[str] = (), unlock: Command | None = None) -> NodeStep:
    """`current` -> the release, audit line, prune, and `unlock` (the session's command) when this
    was the node's last step."""
    root = node.deploy_root
    commands: list[Command] = [cmd.switch_symlink(f"releases/{release}", f"{root}/current"),
                               cmd.append_file(f"{root}/audit.log")]
    if prune:  # last but one: its failure cannot undo the switch
        commands.append(cmd.remove_releases(root, list(prune)))
    if unlock is not None:
        commands.append(unlock)
    back = (cmd.switch_symlink(f"releases/{previous}", f"{root}/current") if previous
            else cmd.remove_current(root))
    return NodeStep(name="switch", node=node.name, script=Script.of(*commands), input=audit,
                    undo=(back,), touches_from=0, summary=f"current -> {release}")


def unwind_script(node: Node, undo: Sequence[Command]) -> Script:
    """The undo of every step a node went through, in reverse, then its audit line (stdin)."""
    return Script.of(*undo, cmd.append_file(f"{node.deploy_root}/audit.log"))


def prune_list(releases: Sequence[str], keep: int, *, new: str, previous: str | None) -> list[str]:
    """Old releases beyond `keep` (the new one counts), never the previous one."""
    old = sorted(r for r in releases if r not in (new, previous))
    room = max(0, keep - 1 - (1 if previous else 0))
    return old[: max(0, len(old) - room)]


def audit_line(node: str, action: str, phase: int | None, by: str, **data: Any) -> bytes:
    record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "node": node,
              "action": action, "phase": phase, "by": by, **data}
    return (scrub(json.dumps(record, sort_keys=True, default=str)) + "\n").encode()
