"""What every `swarm` sub-command shares: the context, project options, errors, the event bus.

This is the only place that turns errors into messages and exit codes, and that runs an
engine coroutine (with the run's signal handling). Command modules import from here and
never from `orchestrator.cli.main`, so there are no import cycles; heavy modules are
imported inside the command functions, so `swarm --help` loads none of them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

if TYPE_CHECKING:
    from orchestrator.config.project import Project
    from orchestrator.engine.signals import Interrupts
    from orchestrator.events import EventBus

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
log = logging.getLogger("swarm")


@dataclass
class Context:
    root: Path
    inventory: Path | None
    playbook: Path | None
    verbose: int

    def project(self) -> Project:
        from orchestrator.config.project import load_project

        return load_project(self.root, self.inventory, self.playbook)

    def inventory_path(self) -> Path:
        return self.inventory or self.root / "inventory" / "swarm.yml"

    def playbook_path(self) -> Path:
        return self.playbook or self.root / "playbooks" / "ai-swarm.yml"


def fail(message: str, code: int) -> None:
    """The one error line (and its hint): secrets masked, control and bidi characters escaped,
    so no input drives the terminal (an ESC sequence in a value or a node's answer)."""
    from orchestrator.secrets import scrub
    from orchestrator.text import printable

    click.echo(printable(scrub(f"error: {message}"), keep_newlines=True), err=True)
    sys.exit(code)


class SafeLogFormatter(logging.Formatter):
    """Log lines (and -v tracebacks, whose frames show local values) scrubbed of every known
    secret, with control and bidi characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        from orchestrator.secrets import scrub
        from orchestrator.text import printable

        return printable(scrub(super().format(record)), keep_newlines=True)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def handle_errors(fn: F) -> F:
    """Turn swarm errors into one clean message and the documented exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from orchestrator.errors import SwarmError

        try:
            return fn(*args, **kwargs)
        except SwarmError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:  # the reader of our output left (`swarm status | head`): not an error
            _quiet_stdout()
        except Exception as exc:  # a bug in swarm: say so, traceback only with -v
            ctx = click.get_current_context(silent=True)
            root = ctx.find_root().obj if ctx else None
            if getattr(root, "verbose", 0):
                log.exception("internal error")
            fail(f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)", 1)
        return None

    return cast(F, wrapper)


def root_context() -> Context:
    obj = click.get_current_context().find_root().obj
    if not isinstance(obj, Context):
        raise click.UsageError("run this command through `swarm` (it needs the project options)")
    return obj


def pass_ctx(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(root_context(), *args, **kwargs)

    return cast(F, wrapper)


def project_options(fn: F) -> F:
    """-i/--inventory, --playbook and -v accepted after the sub-command too, as Ansible users type them."""

    def setter(attr: str) -> Callable[[click.Context, Any, Path | None], None]:
        def set_value(ctx: click.Context, _: Any, value: Path | None) -> None:
            obj = ctx.find_root().obj
            if value is not None and isinstance(obj, Context):
                setattr(obj, attr, value)

        return set_value

    def more_verbose(ctx: click.Context, _: Any, count: int) -> None:
        obj = ctx.find_root().obj
        if count and isinstance(obj, Context):
            obj.verbose += count
            logging.getLogger().setLevel(logging.WARNING - 10 * min(obj.verbose, 2))

    fn = click.option("-i", "--inventory", type=click.Path(path_type=Path), expose_value=False,
                      callback=setter("inventory"), help="inventory file")(fn)
    fn = click.option("--playbook", type=click.Path(path_type=Path), expose_value=False,
                      callback=setter("playbook"), help="playbook file")(fn)
    fn = click.option("-v", "--verbose", count=True, expose_value=False, callback=more_verbose,
                      help="more detail (as swarm -v)")(fn)
    return fn


PHASE_HELP = "phases: 3, a range 2-4 or a list 2,4 (default: every phase, in order)"


def phase_option(fn: F) -> F:
    return click.option("--phase", "phase", metavar="N|N-M|N,M", help=PHASE_HELP)(fn)


def phases_of(project: Project, text: str | None) -> tuple[int, ...] | None:
    from orchestrator.engine.selection import parse_phases

    return parse_phases(text, project)


def make_bus(ctx: Context, output: str) -> EventBus:
    """The event stream with its renderers: live view on a terminal, plain lines otherwise, or JSON."""
    from orchestrator.events import AuditLog, EventBus, JsonRenderer, LiveRenderer, PlainRenderer
    from orchestrator.paths import local_state_dir

    bus = EventBus()
    if output == "json":
        bus.subscribe(JsonRenderer(sys.stdout))
    elif sys.stderr.isatty() and ctx.verbose < 2:
        bus.subscribe(LiveRenderer(ctx.verbose))
    else:
        bus.subscribe(PlainRenderer(sys.stderr, ctx.verbose))
    bus.subscribe(AuditLog(local_state_dir() / "audit.log"))
    return bus


UNWINDS = ("stopping; every node that moved goes back to its previous release (a second signal stops that)",
           "stopping the rollback at its next safe point")


def run_engine(make: Callable[[Interrupts], Awaitable[T]], bus: EventBus | None = None,
               stopping: tuple[str, str] = UNWINDS) -> T:
    """Run an engine coroutine with SIGINT/SIGTERM/SIGHUP handled by the engine (signals.py);
    `stopping` says what the command does on a first and on a second signal."""
    import asyncio

    from orchestrator.engine.signals import Interrupts

    async def main() -> T:
        interrupts = Interrupts()
        interrupts.install()
        if bus is not None:
            interrupts.on_signal = lambda signum, count: _tell(bus, signum, count, stopping)
        try:
            return await make(interrupts)
        finally:
            interrupts.uninstall()

    try:
        return asyncio.run(main())
    finally:
        if bus is not None:
            bus.close()


def _tell(bus: EventBus, signum: int, count: int, stopping: tuple[str, str]) -> None:
    import signal

    name = signal.Signals(signum).name
    bus.emit("run", "info", message=f"{name}: {stopping[0]}" if count == 1 else f"{name} again: {stopping[1]}")


def run_async(coro: Awaitable[T]) -> T:
    """A coroutine that changes nothing on nodes (listing, status): no signal handling needed."""
    import asyncio

    async def main() -> T:
        return await coro

    return asyncio.run(main())
