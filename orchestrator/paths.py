"""Where things are on the controller: the project root and swarm's own state directory.

Kept free of heavy imports: the CLI's group callback (run even for `--help` of a
sub-command) only needs these.
"""

from __future__ import annotations

import os
from pathlib import Path


def find_root(start: Path | None = None) -> Path:
    """The project root: $SWARM_PROJECT, else the nearest directory holding roles/ and playbooks/."""
    env = os.environ.get("SWARM_PROJECT")
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "roles").is_dir() and (candidate / "playbooks").is_dir():
            return candidate
    return here


def local_state_dir() -> Path:
    """The controller's state: local audit log, pending unwinds ($SWARM_STATE_DIR overrides)."""
    return Path(os.environ.get("SWARM_STATE_DIR", Path.home() / ".local/state/swarm"))
