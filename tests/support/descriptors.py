"""More than 1,024 descriptors open in the test process (a gateway serving a thousand charge
points), so that the next socket or port a test opens lands above select(2)'s ceiling."""

from __future__ import annotations

import contextlib
import gc
import resource
import socket
from collections.abc import Iterator

import pytest

SELECT_CEILING = 1024  # FD_SETSIZE on Linux
SOCKETS = 1100


@contextlib.contextmanager
def crowded_descriptors(sockets: int = SOCKETS) -> Iterator[None]:
    """Hold `sockets` sockets and every descriptor below SELECT_CEILING while the block runs.

    A socket takes the lowest free descriptor: one that an earlier test leaked, closed by the
    garbage collector meanwhile, opens a hole below the ceiling, and the descriptor under test
    took it (fd 20 in one loaded run). So: collect first, keep the collector off while crowded,
    and open sockets until one lands above the ceiling (no hole left below it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sockets + 512  # the sockets, plus what pytest and the test itself hold
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} < {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    held = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(sockets)]
    try:
        while True:
            held.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            if held[-1].fileno() >= SELECT_CEILING:
                break
        yield
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if collecting:
            gc.enable()
