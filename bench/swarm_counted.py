"""Run the swarm CLI and write every SSH transport's counters to a JSON file.

    SWARM_BENCH_STATS=/tmp/stats.json python bench/swarm_counted.py -i INV deploy --phase 3

Benchmark helper only: it wraps `orchestrator.transport.ssh.SshTransport.__init__` to keep
the transports a run creates, then dumps `TransportStats` (connections, commands, puts,
gets, bytes and the command log) per host at exit. Everything else is the normal CLI.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from dataclasses import asdict

from orchestrator.transport import ssh

_SEEN: list[ssh.SshTransport] = []
_original_init = ssh.SshTransport.__init__


def _recording_init(self: ssh.SshTransport, *args: object, **kwargs: object) -> None:
    _original_init(self, *args, **kwargs)
    _SEEN.append(self)


def _dump() -> None:
    path = os.environ.get("SWARM_BENCH_STATS")
    if not path:
        return
    per_host: dict[str, list[dict[str, object]]] = {}
    for transport in _SEEN:
        per_host.setdefault(transport.host, []).append(asdict(transport.stats))
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(per_host, fh, indent=1)


def main() -> None:
    ssh.SshTransport.__init__ = _recording_init  # type: ignore[method-assign]
    atexit.register(_dump)
    from orchestrator.cli.main import main as cli_main

    sys.argv[0] = "swarm"
    cli_main()


if __name__ == "__main__":
    main()
