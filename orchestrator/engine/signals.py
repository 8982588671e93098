"""SIGINT, SIGTERM and SIGHUP during a run: the first unwinds, the second stops the unwind.

What systemd, CI cancellation, `timeout` and a closed terminal send must not leave a phase
half deployed. `Interrupts` replaces Python's default handlers while a run's event loop
runs: the first signal asks the run to stop at its next safe point (a command that is
already running on a node finishes first, so the unwind never races it); the run then
unwinds every node that moved and exits 130 / 143 / 129. A second signal stops the unwind
at its next safe point; the run prints what is left on which node and exits 3.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from orchestrator.errors import SwarmError

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


class Interrupted(SwarmError):
    """The run was stopped by a signal (and unwound): exit 128 + the signal number."""

    def __init__(self, signum: int, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), 128 + signum)


class StopRequested(Exception):
    """Raised at a safe point once a signal asked the run (or its unwind) to stop."""

    def __init__(self, signum: int, during_unwind: bool) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.during_unwind = during_unwind


class Interrupts:
    """Counts the signals of one run; the runner and the gate ask it at their safe points."""

    def __init__(self) -> None:
        self.count = 0
        self.signum: int | None = None
        self._first = asyncio.Event()
        self._second = asyncio.Event()
        self._installed: list[int] = []
        self.on_signal: Callable[[int, int], None] | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            try:
                loop.add_signal_handler(sig, self.request, sig)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def request(self, signum: int) -> None:
        self.count += 1
        self.signum = self.signum or signum
        (self._first if self.count == 1 else self._second).set()
        if self.on_signal is not None:
            self.on_signal(signum, self.count)

    @property
    def requested(self) -> bool:
        return self._first.is_set()

    def check(self, *, unwinding: bool = False) -> None:
        """Raise StopRequested if the run (or, while unwinding, the unwind) was asked to stop."""
        event = self._second if unwinding else self._first
        if event.is_set():
            raise StopRequested(self.signum or signal.SIGTERM, unwinding)

    async def sleep(self, seconds: float, *, unwinding: bool = False) -> None:
        """Sleep, but wake up and stop as soon as a (second, while unwinding) signal arrives."""
        event = self._second if unwinding else self._first
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            return
        self.check(unwinding=unwinding)

