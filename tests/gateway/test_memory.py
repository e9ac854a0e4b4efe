"""gateway.memory: freed heap goes back to the kernel (glibc, which this test machine runs)."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

from gateway.memory import release_free_heap


def _rss_kib() -> int:
    match = re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())
    assert match is not None
    return int(match.group(1))


def test_freed_chunks_in_the_middle_of_the_heap_leave_the_resident_set() -> None:
    # 200 chunks of 64 KiB from the C heap (under glibc's 128 KiB mmap threshold), every other
    # one freed, so each freed chunk sits between two live ones: only malloc_trim hands its
    # pages back
    size = 64 * 1024
    blocks = [ctypes.create_string_buffer(size) for _ in range(200)]
    for block in blocks:
        ctypes.memset(block, 1, size)  # touched: resident
    del blocks[::2]
    before = _rss_kib()
    assert release_free_heap() is True
    assert before - _rss_kib() >= 100 * 64 // 2  # at least half of the 6.25 MiB freed
