"""Run the pyinfra CLI and count SSH connections and channels per host (benchmark helper).

    PYINFRA_BENCH_STATS=/tmp/stats.json python bench/pyinfra/counted.py INVENTORY DEPLOY -y

pyinfra's ssh connector is paramiko: this wraps `SSHClient.connect` (one per TCP
connection) and `Transport.open_session` (one per remote command or SFTP session) and
writes the counts per address at exit. Everything else is the normal pyinfra CLI.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections import Counter

import paramiko

CONNECTIONS: Counter[str] = Counter()
SESSIONS: Counter[str] = Counter()
_connect = paramiko.SSHClient.connect
_open_session = paramiko.Transport.open_session


def _counting_connect(self: paramiko.SSHClient, hostname: str, *args: object, **kwargs: object) -> object:
    CONNECTIONS[str(hostname)] += 1
    return _connect(self, hostname, *args, **kwargs)


def _counting_session(self: paramiko.Transport, *args: object, **kwargs: object) -> object:
    peer = self.getpeername()[0] if self.sock is not None else "?"
    SESSIONS[str(peer)] += 1
    return _open_session(self, *args, **kwargs)


def _dump() -> None:
    path = os.environ.get("PYINFRA_BENCH_STATS")
    if path:
        hosts = sorted(set(CONNECTIONS) | set(SESSIONS))
        data = {h: {"connections": CONNECTIONS[h], "sessions": SESSIONS[h]} for h in hosts}
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)


def main() -> None:
    paramiko.SSHClient.connect = _counting_connect  # type: ignore[method-assign]
    paramiko.Transport.open_session = _counting_session  # type: ignore[method-assign]
    atexit.register(_dump)
    from pyinfra_cli.main import main as pyinfra_main

    sys.argv[0] = "pyinfra"
    pyinfra_main()


if __name__ == "__main__":
    main()
