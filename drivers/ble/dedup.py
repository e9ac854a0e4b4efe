"""Per-tag state kept outside the pure decoders: duplicate suppression and BTHome replay guard.

BlueZ reports a device's properties again for every received advertisement (bleak sets
DuplicateData=false) and for RSSI-only changes, while a tag repeats one measurement over
several advertisements. A tag's reading set is emitted once per new sequence number (Ruuvi
measurement sequence, BTHome packet id or encryption counter, pvvx/atc1441 counter); formats
without one are identified by their payload bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Final

__all__ = ["Deduplicator", "ReplayGuard", "counter_ahead"]

# RFC 1982 serial number arithmetic over BTHome's 32-bit counter (bthome.io/encryption: 4-byte
# counter; it wraps to 0 after 2^32 - 1).
_COUNTER_MODULUS: Final = 1 << 32
_HALF_RANGE: Final = 1 << 31


def counter_ahead(counter: int, last: int) -> bool:
    """True when `counter` comes after `last` in 32-bit serial-number order (RFC 1982 section
    3.2, SERIAL_BITS = 32): it is 1 to 2^31 - 1 steps ahead, counting across the wrap. So 0
    follows 2^32 - 1, while a counter behind `last`, equal to it, or exactly half the range
    away (undefined in RFC 1982) does not. A recorded advertisement could only come "ahead"
    again after 2^31 newer ones: 68 years at one advertisement per second."""
    return 0 < (counter - last) % _COUNTER_MODULUS < _HALF_RANGE


class Deduplicator:
    """Remembers the last measurement identity per device.

    With a state folder the identities are persisted (JSON, written when the driver stops and
    read once, then removed, by the next start), so a gateway restarted between two repeats of one
    measurement does not count it again: a tag repeats a measurement over several
    advertisements, and the one the stopped gateway counted is still being advertised when the
    next one listens (issue 17: a clean restart counted up to one measurement per tag twice).
    An identity is `(format, sequence or counter)` or `(format, payload bytes)`."""

    FILE_NAME: Final = "last_measurements.json"

    __slots__ = ("_last", "_path", "_dirty")

    def __init__(self, state_dir: Path | None = None) -> None:
        self._last: dict[str, object] = {}
        self._path = state_dir / self.FILE_NAME if state_dir is not None else None
        self._dirty = False
        if self._path is not None and self._path.exists():
            try:
                loaded = json.loads(self._path.read_text())
                self._last = {str(device): _identity_from_json(value) for device, value in loaded.items()}
            except (ValueError, TypeError, AttributeError):
                self._last = {}  # a damaged file only risks one measurement per tag counted twice
            # valid for the restart right after the stop that wrote it, not for a later one
            # after a crash (a sequence number may have come round again by then)
            with contextlib.suppress(OSError):
                self._path.unlink()

    def is_new(self, device: str, identity: object) -> bool:
        """True the first time `identity` is seen for `device` (since its previous one)."""
        if self._last.get(device) == identity:
            return False
        self._last[device] = identity
        self._dirty = True
        return True

    def __len__(self) -> int:
        return len(self._last)

    @property
    def path(self) -> Path | None:
        return self._path

    def forget_saved(self) -> None:
        """A driver restarted inside one process keeps these identities in memory: the file its
        stop wrote is for the next process only, and left on disk a crash later would make that
        process read identities from long before it (a sequence number may have come round
        again). Removed; written again at the next stop."""
        if self._path is None:
            return
        with contextlib.suppress(OSError):
            self._path.unlink()
        self._dirty = bool(self._last)

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({device: _identity_to_json(i) for device, i in self._last.items()}, sort_keys=True))
        os.replace(tmp, self._path)
        self._dirty = False


def _identity_to_json(identity: object) -> object:
    if isinstance(identity, tuple):
        return [_identity_to_json(part) for part in identity]
    if isinstance(identity, bytes):
        return {"hex": identity.hex()}
    return identity


def _identity_from_json(value: object) -> object:
    if isinstance(value, list):
        return tuple(_identity_from_json(part) for part in value)
    if isinstance(value, dict):
        return bytes.fromhex(str(value["hex"]))
    return value


class ReplayGuard:
    """Rejects an encrypted BTHome advertisement whose counter is not ahead of the last one.

    bthome.io/encryption leaves replay protection to the receiver: the counter must grow.
    "Grow" is `counter_ahead` (serial-number order), so the wrap from 2^32 - 1 to 0 is growth
    and a tag is not locked out after 4 billion advertisements. The last accepted counter per
    device is persisted (JSON under the driver's state folder), so a gateway restart neither
    reopens the window for a recorded advertisement nor forgets where the wrap stands.
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
        """Accept (and remember) `counter` when it is ahead of the last accepted one."""
        last = self._counters.get(device)
        if last is not None and not counter_ahead(counter, last):
            return False
        self._counters[device] = counter
        self._dirty = True
        return True

    @property
    def path(self) -> Path | None:
        """Where the counters are kept (None: in memory only)."""
        return self._path

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
