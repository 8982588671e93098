"""Moving one revision onto a node, by each kind of source, then checking it in.

- **direct** (node to node): the destination accepts one short-lived SSH key, limited to the
  source's address, to one forced command (unpack into the revision's temp dir) and to a day at
  most; the source streams `tar | ssh` to it with the destination's host key as swarm knows it
  (the inventory's known_hosts), and both are removed as soon as the copy ends. The bytes cross
  the LAN once, encrypted once: a plain `cat | ssh` between the same two nodes (bench/copy.py).
- **relay** (node to node through the controller): `tar` on the source, its stream copied by the
  controller into `tar -x` on the destination, over the run's own two SSH connections. No key
  between nodes, but the bytes cross the controller's link twice and are encrypted twice.
- **push** (the controller's mirror): each file streamed into the destination over its connection.

Whatever the way, the files land in `<revision>.tmp`, the manifest is written beside them, and
`install` checks every file against its sha256 before renaming the directory into place.
While a copy runs, the destination's temp dir is measured every second for the progress view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.commands import models as mcmd
from orchestrator.commands import to_shell
from orchestrator.config.inventory import Node
from orchestrator.errors import CommandFailed, RuntimeFailure
from orchestrator.models.snapshot import Snapshot
from orchestrator.models.store import FileProblem, check_files
from orchestrator.transport.base import Transport
from orchestrator.transport.sshlib import asyncssh

_CHUNK = 1 << 20
KEY_LIFETIME_S = 26 * 3600   # expiry-time is the destination's local time: a day plus any time zone


@dataclass(frozen=True)
class Endpoint:
    """A node taking part in a copy, over the run's connection to it."""

    node: Node
    transport: Transport

    @property
    def name(self) -> str:
        return self.node.name


Report = Callable[[int], None]


def copy_timeout(snapshot: Snapshot) -> float:
    return 600 + snapshot.total_bytes / 5e6   # never below 5 MB/s before the copy counts as stuck


async def with_progress(dst: Endpoint, tmp: str, report: Report, work: Awaitable[None]) -> None:
    """Run a copy while the destination's temp dir is measured every second."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=1.0)
        if not task.done():
            result = await dst.transport.run(mcmd.size_of(tmp), check=False, timeout=10)
            text = result.stdout.strip()
            if text.isdigit():
                report(int(text))
    await task


# --- direct -------------------------------------------------------------------------------------


def authorized_line(public_key: str, forced: str, source_address: str, marker: str,
                    now: float | None = None) -> str:
    """The destination's authorized_keys line for one copy: one command, one source, one day."""
    expiry = time.strftime("%Y%m%d%H%M", time.gmtime((time.time() if now is None else now) + KEY_LIFETIME_S))
    options = ["restrict", f'expiry-time="{expiry}"', f'command="{_quote_option(forced)}"']
    if _is_ip(source_address):
        options.insert(1, f'from="{source_address}"')
    return f"{','.join(options)} {public_key} {marker}\n"


def _quote_option(text: str) -> str:
    """authorized_keys option values: a quote is escaped with a backslash (sshd(8))."""
    if "\n" in text:
        raise ValueError("a forced command cannot span lines")
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _is_ip(address: str) -> bool:
    parts = address.split(".")
    return (len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)) or ":" in address


async def copy_direct(src: Endpoint, dst: Endpoint, snapshot: Snapshot, src_dir: str, tmp: str,
                      host_key_line: str, marker: str) -> None:
    """`tar | ssh` from the source node straight to the destination (see the module docstring)."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=marker)
    public = key.export_public_key("openssh").decode().split()
    forced = to_shell(mcmd.receive_tar(tmp).argv)
    line = authorized_line(f"{public[0]} {public[1]}", forced, src.node.address, marker)
    keys_dir = f"{src.node.deploy_root}/{mcmd.KEYS_DIR}"
    key_file, known_file = f"{keys_dir}/{marker}", f"{keys_dir}/{marker}.known_hosts"
    try:
        await dst.transport.run(mcmd.authorize_key(marker), input=line.encode(), timeout=30)
        await src.transport.run(mcmd.write_secret_file(key_file), input=key.export_private_key("openssh"),
                                timeout=30)
        await src.transport.run(mcmd.write_secret_file(known_file), input=host_key_line.encode(), timeout=30)
        send = mcmd.send_direct(src_dir, snapshot.names, key_file, known_file, dst.node.ssh.user,
                                dst.node.address, dst.node.ssh.port)
        await src.transport.run(send, timeout=copy_timeout(snapshot))
    finally:
        await asyncio.gather(dst.transport.run(mcmd.revoke_key(marker), check=False, timeout=30),
                             src.transport.run(mcmd.remove_files([key_file, known_file]), check=False, timeout=30),
                             return_exceptions=True)


# --- relay and push -------------------------------------------------------------------------------


def _processes(transport: Transport) -> Callable[[str], Awaitable[asyncssh.SSHClientProcess[bytes]]]:
    start = getattr(transport, "process", None) or getattr(getattr(transport, "inner", None), "process", None)
    if start is None:
        raise RuntimeFailure(f"{transport.host}: copying model weights needs an SSH connection")
    return start  # type: ignore[no-any-return]


async def copy_relay(src: Endpoint, dst: Endpoint, snapshot: Snapshot, src_dir: str, tmp: str) -> None:
    """`tar -c` on the source, streamed by the controller into `tar -x` on the destination."""
    sender = await _processes(src.transport)(to_shell(mcmd.send_tar(src_dir, snapshot.names).argv))
    receiver = await _processes(dst.transport)(to_shell(mcmd.receive_tar(tmp).argv))
    try:
        while chunk := await sender.stdout.read(_CHUNK):
            receiver.stdin.write(chunk)
            await receiver.stdin.drain()
        receiver.stdin.write_eof()
        sent, received = await asyncio.gather(sender.wait(check=False), receiver.wait(check=False))
    finally:
        sender.close()
        receiver.close()
    for done, what, host in ((sent, "tar -c", src.name), (received, "tar -x", dst.name)):
        if done.returncode != 0:
            raise CommandFailed(host, what, done.returncode, "", _text(done.stderr))


async def push_local(dst: Endpoint, local_dir: Path, snapshot: Snapshot, tmp: str) -> None:
    """Every file of the controller's copy, streamed into the destination's temp dir."""
    await dst.transport.run(mcmd.start_tmp(tmp), timeout=60)
    start = _processes(dst.transport)
    for f in snapshot.files:
        receiver = await start(to_shell(mcmd.receive_file(tmp, f.name).argv))
        try:
            with (local_dir / f.name).open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    receiver.stdin.write(chunk)
                    await receiver.stdin.drain()
            receiver.stdin.write_eof()
            done = await receiver.wait(check=False)
        finally:
            receiver.close()
        if done.returncode != 0:
            raise CommandFailed(dst.name, f"write {f.name}", done.returncode, "", _text(done.stderr))


def _text(data: object) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")


# --- checking in ---------------------------------------------------------------------------------


async def install(dst: Endpoint, snapshot: Snapshot, tmp: str, final: str) -> list[FileProblem]:
    """Hash every file the destination received, compare with its pin, and only then write the
    manifest and rename the revision into place; [] when installed, else every bad file named."""
    problems = await check_files(dst.transport, tmp, snapshot)
    if problems:
        return problems
    await dst.transport.run(mcmd.receive_file(tmp, mcmd.MANIFEST), input=snapshot.dumps(), timeout=30)
    await dst.transport.run(mcmd.install(tmp, final), timeout=60)
    return []
