"""Size and nesting caps for JSON read from the network (network-server uplinks, Semtech UDP).

msgspec decodes nested arrays and objects recursively: a few thousand levels (5,000 fit in
10 KB) end in RecursionError rather than a decode error. Every JSON entry point of the driver
calls `check_json` first, so a document past the caps is the driver's own decode error with a
cause of its own (`json_too_large`, `json_too_deep`), counted and logged once like any other.
"""

from __future__ import annotations

import re
from typing import Final

from drivers.lorawan.errors import LoRaWANDecodeError

__all__ = ["MAX_JSON_DEPTH", "check_json"]

# Real uplinks nest 4-6 levels (ChirpStack v4: document > rxInfo > gateway > location); codec
# objects add a few. 32 leaves room for any decoder and stays far from the interpreter's limit.
MAX_JSON_DEPTH: Final = 32

# A JSON string (so brackets inside strings are not counted), or one bracket.
_TOKENS: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPEN: Final = frozenset(b"[{")
_QUOTE: Final = ord('"')


def check_json(body: bytes, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, what: str = "JSON") -> None:
    """Raise `LoRaWANDecodeError` when `body` is longer than `max_bytes` or nests deeper than
    `max_depth`. Cheap on real traffic: a document with no more brackets than `max_depth` cannot
    nest deeper, and only one with more is scanned (in C, by the regular expression)."""
    if len(body) > max_bytes:
        raise LoRaWANDecodeError("json_too_large", f"{what} of {len(body)} bytes, the limit is {max_bytes}")
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return
    depth = 0
    for match in _TOKENS.finditer(body):
        first = body[match.start()]
        if first == _QUOTE:
            continue
        if first in _OPEN:
            depth += 1
            if depth > max_depth:
                raise LoRaWANDecodeError("json_too_deep", f"{what} nests deeper than {max_depth} levels")
        else:
            depth -= 1
