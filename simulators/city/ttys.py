"""Probing ptys from outside: what waits unread on the gateway's side, which ttys a process holds."""

from __future__ import annotations

import contextlib
import os

__all__ = ["drain", "open_ttys"]


def drain(tty_path: str) -> bytes:
    """What waits unread on the gateway's side of a pty (a second reader takes it out)."""
    if not tty_path:
        return b""
    chunks = []
    try:
        fd = os.open(tty_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return b""
    try:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def open_ttys(pid: int) -> set[str]:
    out = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out
