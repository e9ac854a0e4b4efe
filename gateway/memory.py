"""Give freed heap memory back to the kernel (glibc's malloc_trim).

CPython takes objects over 512 bytes, and the compiler's work space, from the C allocator.
Freed chunks in the middle of glibc's heap stay resident until something reuses them: compiling
one OCPP action's schema validator (drivers/ocpp/schemas.py) leaves about 0.3 MiB of them,
every action of a city's charge points about 4.7 MiB, and a boot storm of charge points more.
malloc_trim(0) returns every whole free page to the kernel (madvise); it takes about a
millisecond on the gateway's heap, so it is called after such one-off work and once a minute,
never per reading. On a C library without it (musl) this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Final

__all__ = ["release_free_heap"]


def _trim_function() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_trim: Final = _trim_function()


def release_free_heap() -> bool:
    """Return free heap pages to the kernel; True when the C library could (glibc)."""
    return bool(_trim is not None and _trim(0))
