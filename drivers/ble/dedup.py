"""Per-tag state kept outside the pure decoders: duplicate suppression and BTHome replay guard.

BlueZ reports a device's properties again for every received advertisement (bleak sets
DuplicateData=false) and for RSSI-only changes, while a tag repeats one measurement over
several advertisements. A tag's reading set is emitted once per new sequence number (Ruuvi
measurement sequence, BTHome packet id or encryption counter, pvvx/atc1441 counter); formats
without one are identified by their payload bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

__all__ = ["Deduplicator", "ReplayGuard"]


class Deduplicator:
    """Remembers the last measurement identity per device."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, object] = {}

    def is_new(self, device: str, identity: object) -> bool:
        """True the first time `identity` is seen for `device` (since its previous one)."""
        if self._last.get(device) == identity:
            return False
        self._last[device] = identity
        return True

    def __len__(self) -> int:
        return len(self._last)


class ReplayGuard:
    """Rejects an encrypted BTHome advertisement whose counter did not increase.

    bthome.io/encryption leaves replay protection to the receiver: the counter must grow. The
    last accepted counter per device is persisted (JSON under the driver's state folder), so a
    gateway restart does not reopen the window for a recorded advertisement.
    """

    FILE_NAME: Final = "bthome_counters.json"

    def __init__(self, state_dir: Path | None = None) -> None:
        self._path = state_dir / self.FILE_NAME if state_dir is not None else None
        self._counters: dict[str, int] = {}
        self._dirty = False
        if self._path is not None and self._path.exists():
            try:
                loaded = json.loads(self._path.read_text())
                self._counters = {str(k): int(v) for k, v in loaded.items()}
            except (ValueError, TypeError, AttributeError):
                self._counters = {}  # a damaged file only loses replay history

    def check(self, device: str, counter: int) -> bool:
        """Accept (and remember) `counter` when it is above the last accepted one."""
        last = self._counters.get(device)
        if last is not None and counter <= last:
            return False
        self._counters[device] = counter
        self._dirty = True
        return True

    def last(self, device: str) -> int | None:
        return self._counters.get(device)

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._counters, sort_keys=True))
        os.replace(tmp, self._path)
        self._dirty = False
