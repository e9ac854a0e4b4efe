"""Device sessions and uplink frame counters, persisted under the driver's state folder.

One JSON document, rewritten atomically (temp file, fsync, rename) when something changed and
the driver asks for a flush: every `state_flush_interval` seconds and right after a join, never
once per frame. After a power cut the counters are at most one interval behind, so a replay
window of that size is the accepted trade-off for not writing the SD card per frame.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Final

import msgspec

__all__ = ["FILE_MODE", "KEEP_DEV_NONCES", "MAX_FCNT_GAP", "Session", "SessionStore", "extend_fcnt"]

# LoRaWAN 1.0.x section 4.3.1.5: frames more than MAX_FCNT_GAP behind are a 16-bit rollover.
MAX_FCNT_GAP: Final = 16384
# OTAA DevNonces remembered per device to refuse a replayed JoinRequest (section 6.2.4).
KEEP_DEV_NONCES: Final = 256
# The file holds session keys (NwkSKey, AppSKey): owner read/write only, whatever the umask.
FILE_MODE: Final = 0o600


class Session(msgspec.Struct, kw_only=True):
    dev_eui: str  # lower-case hex
    dev_addr: int
    nwk_skey: str  # hex
    app_skey: str  # hex
    activation: str  # "abp" or "otaa"
    fcnt_up: int = -1  # last accepted 32-bit uplink counter; -1 = none yet
    dev_nonces: list[int] = msgspec.field(default_factory=list)  # OTAA: DevNonces already used

    def nwk_key(self) -> bytes:
        return bytes.fromhex(self.nwk_skey)

    def app_key(self) -> bytes:
        return bytes.fromhex(self.app_skey)


def extend_fcnt(last: int, fcnt16: int) -> int:
    """The 32-bit counter a 16-bit FCnt stands for, given the last accepted one (section 4.3.1.5).

    A value at or just below the last one stays there (the caller rejects it as a replay); one
    more than MAX_FCNT_GAP below means the low half wrapped.
    """
    if last < 0:
        return fcnt16
    candidate = (last & ~0xFFFF) | fcnt16
    if candidate < last and last - candidate > MAX_FCNT_GAP:
        candidate += 0x10000
    return candidate


class _Document(msgspec.Struct):
    version: int = 1
    sessions: list[Session] = msgspec.field(default_factory=list)


class SessionStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.by_eui: dict[str, Session] = {}
        self.by_addr: dict[int, list[Session]] = {}
        self.dirty = False
        self.writes = 0
        self._write_lock = threading.Lock()  # periodic flush and join flush may overlap

    def load(self) -> None:
        """Read the stored sessions; a missing file is an empty store, a damaged one is kept
        aside as `<name>.corrupt` and the store starts empty (the devices rejoin)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            document = msgspec.json.decode(raw, type=_Document)
        except (msgspec.DecodeError, UnicodeDecodeError):
            self.path.replace(self.path.with_suffix(".corrupt"))
            return
        for session in document.sessions:
            self._index(session)

    def _index(self, session: Session) -> None:
        old = self.by_eui.get(session.dev_eui)
        if old is not None:
            peers = self.by_addr.get(old.dev_addr, [])
            if old in peers:
                peers.remove(old)
            if not peers:
                self.by_addr.pop(old.dev_addr, None)
        self.by_eui[session.dev_eui] = session
        self.by_addr.setdefault(session.dev_addr, []).append(session)

    def put(self, session: Session) -> None:
        self._index(session)
        self.dirty = True

    def touch(self) -> None:
        self.dirty = True

    def snapshot(self) -> bytes:
        """Encoded on the event loop; the write itself may then run in a thread."""
        self.dirty = False
        return msgspec.json.encode(_Document(sessions=list(self.by_eui.values())))

    def write(self, data: bytes) -> None:
        with self._write_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            # Created 0600 (the umask can only remove bits), and set again in case a temp file
            # of an older run was left with other bits: the keys are never readable by others.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), FILE_MODE)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(self.path)
            self.writes += 1

    def flush(self) -> None:
        if self.dirty:
            self.write(self.snapshot())
