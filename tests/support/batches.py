"""Read what the file uplink wrote: gzip members of JSON lines (`batches.jsonl.gz`)."""

from __future__ import annotations

import gzip
from pathlib import Path

from gateway.batch import BatchDocument, decode_document


def batch_lines(path: Path) -> list[bytes]:
    """The JSON lines of one output file, gzip or plain."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)  # inflates every member in turn
    return [line for line in data.splitlines() if line.strip()]


def read_batches(path: Path) -> list[BatchDocument]:
    return [decode_document(line) for line in batch_lines(path)]
