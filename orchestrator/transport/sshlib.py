"""asyncssh, imported without its compiler probe: the one place swarm imports the SSH library.

On import asyncssh looks for optional C libraries (nettle for UMAC MACs, liboqs for
post-quantum key exchange) with `ctypes.util.find_library`, which on Linux asks the loader's
cache (`ldconfig -p`) and then, for a library the cache does not list, compiles and links a
test program with gcc and ld. Where liboqs is not installed (most machines) that is six
processes and ~30 ms of every run — 7% of a no-op deploy on the lab (strace, 2026-12-06).

While asyncssh loads, `find_library` here answers from one `ldconfig -p` read: a library the
loader's cache does not list could not be opened by its soname anyway, so nothing asyncssh
could use is missed. With LD_LIBRARY_PATH set, or where `ldconfig -p` does not answer (not
glibc), the library's own probe runs as before.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import os
import re
import struct
import subprocess
from collections.abc import Callable, Iterator


def loader_cache_lookup() -> Callable[[str], str | None] | None:
    """A `find_library` over one `ldconfig -p` listing, or None where that cannot answer."""
    if os.name != "posix" or os.uname().sysname != "Linux" or os.environ.get("LD_LIBRARY_PATH"):
        return None
    try:
        listing = subprocess.run(["/sbin/ldconfig", "-p"], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, env={"LC_ALL": "C", "LANG": "C"},
                                 check=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    abi = _ABI.get(f"{os.uname().machine}-{struct.calcsize('l') * 8}", "libc6")

    def find_library(name: str) -> str | None:   # the regex ctypes.util uses on the same listing
        found = re.search(rb"\s+(lib%s\.[^\s]+)\s+\(%s" % (re.escape(name.encode()), abi.encode()), listing)
        return os.fsdecode(found.group(1)) if found else None
    return find_library


_ABI = {"x86_64-64": "libc6,x86-64", "ppc64-64": "libc6,64bit", "sparc64-64": "libc6,64bit",
        "s390x-64": "libc6,64bit", "ia64-64": "libc6,IA-64"}


@contextlib.contextmanager
def probing_by_loader_cache() -> Iterator[None]:
    lookup = loader_cache_lookup()
    if lookup is None:
        yield
        return
    real = ctypes.util.find_library
    setattr(ctypes.util, "find_library", lookup)  # noqa: B010 (mypy: a plain function's name)
    try:
        yield
    finally:
        setattr(ctypes.util, "find_library", real)  # noqa: B010


with probing_by_loader_cache():
    import asyncssh  # the probe answered from the loader cache: ~30 ms of gcc and ld spared (strace)

__all__ = ["asyncssh"]
