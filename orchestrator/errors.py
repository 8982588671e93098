"""One exception tree for swarm; only the CLI turns these into messages and exit codes.

Exit codes (design.md): 0 ok, 1 phase failed (rolled back) or runtime failure,
2 bad input, 3 rollback failed (manual action needed), 4 another deploy holds the lock.
"""

from __future__ import annotations


class SwarmError(Exception):
    """Base of every error swarm reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class InputError(SwarmError):
    """Bad inventory, playbook, role, template or command-line input (exit 2)."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, hint: str | None = None) -> None:
        full = f"{file}: {message}" if file else message
        super().__init__(full, hint=hint)
        self.file = file


class PlanError(InputError):
    """A plan that cannot work on the hardware (VRAM, RAM, ports); exit 2."""


class RuntimeFailure(SwarmError):
    """Something failed while talking to nodes or services (exit 1)."""


class TransportError(RuntimeFailure):
    """SSH-level failure: unreachable host, auth failure, host key mismatch."""

    def __init__(self, host: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{host}: {message}", hint=hint)
        self.host = host


class CommandFailed(RuntimeFailure):
    """A remote command exited non-zero; keeps command, exit status and output tail."""

    def __init__(
        self, host: str, command: str, exit_status: int | None, stdout: str = "", stderr: str = ""
    ) -> None:
        tail = _tail(stderr or stdout)
        msg = f"{host}: command failed (exit {exit_status}): {command}"
        if tail:
            msg += f"\n  {tail}"
        super().__init__(msg)
        self.host = host
        self.command = command
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr


class PhaseFailed(RuntimeFailure):
    """A phase failed and was rolled back (exit 1)."""


class RollbackFailed(SwarmError):
    """Rollback itself failed; an operator must act (exit 3)."""

    exit_code = 3


class LockHeld(SwarmError):
    """Another deploy holds the lock on a node (exit 4)."""

    exit_code = 4


class ServiceError(RuntimeFailure):
    """Vault / Consul / registry answered with an error or could not be reached."""


def _tail(text: str, lines: int = 5) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n  ".join(kept)
