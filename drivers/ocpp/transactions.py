"""The charge points' open transactions, kept across gateway restarts.

A 1.6 StopTransaction and every later MeterValues of a transaction name only its transaction id;
the connector it runs on is known from the StartTransaction (2.0.1: the first TransactionEvent
with an EVSE). Held only in memory, a restart, clean or not, lost the map, and with it 8-9 % of
the city's OCPP readings for the rest of each open transaction (issue 17). The map is written to
`<state_dir>/ocpp-transactions.json` when it changed, at most every `FLUSH_INTERVAL` seconds and on
close, atomically (temp file, rename); it is small (a few entries per charge point).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Final

import msgspec

__all__ = ["FILE_NAME", "FLUSH_INTERVAL", "TransactionStore"]

FILE_NAME: Final = "ocpp-transactions.json"
FLUSH_INTERVAL: Final = 2.0


class _Entry(msgspec.Struct):
    version: str
    transactions: dict[str, str]


_decoder = msgspec.json.Decoder(dict[str, _Entry])


class TransactionStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        # Writes run on worker threads. Closing cancels the periodic flush, but a write already
        # on its thread goes on, and the final flush's write would share its temp file: a torn
        # or older map renamed into place. Held across temp file and rename, in start order.
        self._write_lock = threading.Lock()

    def load(self) -> dict[str, tuple[str, dict[str, str]]]:
        """{charge point: (version, {transaction id: unit})}; a damaged file is set aside as
        `.corrupt` and the map starts empty (the next StartTransaction binds again)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            entries = _decoder.decode(raw)
        except msgspec.DecodeError:
            self.path.replace(self.path.with_suffix(".corrupt"))
            return {}
        return {ident: (e.version, dict(e.transactions)) for ident, e in entries.items()}

    @staticmethod
    def encode(maps: dict[str, tuple[str, dict[str, str]]]) -> bytes:
        """Encoded on the event loop (a consistent snapshot); `write` may run in a thread."""
        return msgspec.json.encode({ident: _Entry(version, tx) for ident, (version, tx) in maps.items() if tx})

    def write(self, data: bytes) -> None:
        with self._write_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, self.path)
