"""How swarm reaches nodes: a narrow `Transport` protocol and its implementations.

`base` holds the protocol, `Result` and per-connection counters; `ssh` the asyncssh
transport and host-key trust; `fleet` the run's connections (parallel, kept, closed); `recording` the `--check` wrapper;
`local` a subprocess transport for tests.
"""

from orchestrator.transport.base import Result, Transport, TransportStats
from orchestrator.transport.fleet import Fleet, GroupResult
from orchestrator.transport.local import LocalTransport
from orchestrator.transport.recording import RecordedPut, RecordedRun, RecordingTransport
from orchestrator.transport.ssh import (
    DEFAULT_FORKS,
    HostKey,
    SshTarget,
    SshTransport,
    fetch_host_key,
    record_host_key,
    trust,
)

__all__ = [
    "DEFAULT_FORKS",
    "Fleet",
    "GroupResult",
    "HostKey",
    "LocalTransport",
    "RecordedPut",
    "RecordedRun",
    "RecordingTransport",
    "Result",
    "SshTarget",
    "SshTransport",
    "Transport",
    "TransportStats",
    "fetch_host_key",
    "record_host_key",
    "trust",
]
