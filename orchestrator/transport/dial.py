"""An optional node's TCP connect: started as soon as the run knows the node, answered or not
within its window (`ssh.optional_window`).

An optional node that is off never answers a SYN (on a LAN the kernel's ARP gives up after
~3 s; over a tailnet the packet is dropped), one that is on answers in a round trip. The
window is counted from the SYN, so a run that knows its nodes before it has loaded its SSH
library (a deploy the plan record answers: engine/deploy.py) dials first and lets the window
run beside the ~0.1 s of imports and the other nodes' handshakes, instead of after them.

This module needs only `socket`: dialling must not wait for asyncssh to load. The socket a
dial connects is handed to asyncssh for the SSH handshake (transport/ssh.py).
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import time
from dataclasses import dataclass, field

Address = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]   # as getaddrinfo gives it


class NoAnswer(Exception):
    """The TCP connect got no answer within the window."""


@dataclass(eq=False)
class Dial:
    """One TCP connect under way (`started`: time.monotonic() when its SYN left)."""

    sock: socket.socket
    address: Address
    started: float = field(default_factory=time.monotonic)
    error: int = 0                       # the kernel said no at once (e.g. a neighbour known dead)

    def close(self) -> None:
        self.sock.close()


def numeric(address: str, port: int) -> tuple[int, Address] | None:
    """(family, socket address) for an IP literal; None for a name (resolved in the loop)."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def dial(family: int, address: Address) -> Dial:
    """Send the SYN now and return at once; the kernel goes on with the handshake."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    code = sock.connect_ex(address)
    return Dial(sock, address, error=0 if code in (0, errno.EINPROGRESS, errno.EALREADY) else code)


def dial_early(address: str, port: int) -> Dial | None:
    """`dial` for an IP literal (a name: None, it is resolved and dialled when the run connects)."""
    found = numeric(address, port)
    return dial(*found) if found is not None else None


async def answered(attempt: Dial, window: float) -> socket.socket:
    """The connected socket, once the node answers within `window` seconds of the SYN;
    `NoAnswer` if it does not, OSError if it refused. The socket is closed on failure."""
    try:
        if attempt.error:
            raise OSError(attempt.error, os.strerror(attempt.error))
        if not _writable(attempt.sock):
            left = window - (time.monotonic() - attempt.started)
            if left <= 0:
                raise NoAnswer()
            await _until_writable(attempt.sock, left)
        code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        attempt.close()
        raise
    return attempt.sock


def _writable(sock: socket.socket) -> bool:
    """The connect finished (answered or refused), without waiting."""
    poller = select.poll()   # not select(): a busy controller's descriptors may pass 1024
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(0))


async def _until_writable(sock: socket.socket, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise NoAnswer() from None
    finally:
        loop.remove_writer(fd)
