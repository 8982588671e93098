"""The floor: what the SSH work of a no-op converge costs with nothing else around it.

    python bench/floor.py INVENTORY [--docker]

A bare asyncssh script, one process: connect to every node of the inventory in parallel
(same key, same known_hosts check as swarm), run ONE read per node — the current release
record, plus `docker ps -a` with --docker — and exit. No config loading, no rendering, no
Vault, no comparison: a tool doing the same reads cannot be faster than this, so bench/
reports swarm as a multiple of it.

It starts and ends as swarm does, so that stays true: asyncssh is imported without its C
library compiler probe (orchestrator/transport/sshlib.py, ~30 ms) and the process exits
without the interpreter's last cycle collection (gc.freeze, as orchestrator/cli/main.quick_exit,
~50 ms). Before 2026-12-06 the floor paid both, as swarm did.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from pathlib import Path

import yaml

from orchestrator.transport.sshlib import asyncssh


async def read(address: str, user: str, key: str, known_hosts: str, command: str) -> int:
    async with asyncssh.connect(address, username=user, client_keys=[key], known_hosts=known_hosts,
                                agent_path=None, config=[], preferred_auth=("publickey",)) as conn:
        result = await conn.run(command, check=False)
        return len(str(result.stdout))


async def main(inventory: Path, docker: bool) -> int:
    data = yaml.safe_load(inventory.read_text())
    ssh = data.get("ssh") or {}
    root = data.get("deploy_root", "/opt/ai-swarm")
    command = f"cat {root}/current/release.json 2>/dev/null; ls {root}/releases 2>/dev/null"
    if docker:
        command += "; docker ps -a --no-trunc --format '{{json .}}'"
    nodes = [n for n in data["nodes"].values() if not n.get("optional")]
    sizes = await asyncio.gather(*(read(str(n["address"]), ssh.get("user", "swarm"),
                                        str(Path(ssh["key"]).expanduser()),
                                        str(Path(ssh["known_hosts"]).expanduser()), command)
                                   for n in nodes))
    return 0 if all(s >= 0 for s in sizes) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inventory", type=Path)
    parser.add_argument("--docker", action="store_true", help="also `docker ps -a` (the fleet's nodes)")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(main(args.inventory, args.docker)))
    finally:
        gc.freeze()
