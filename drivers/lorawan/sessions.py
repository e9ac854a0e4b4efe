"""Device sessions and uplink frame counters, persisted under the driver's state folder.

Two JSON documents, each rewritten atomically (temp file, fsync, rename) when it changed and
the driver asks for a flush (every `state_flush_interval` seconds and right after a join, never
once per frame):
- `<name>.json`: the sessions (keys, DevNonces used, counters), rewritten after a join;
- `<name>-fcnt.json`: only the uplink counters, {DevEUI: FCnt}, rewritten when frames arrived.
The counters change with every frame and the sessions almost never: with the DevNonce lists the
sessions document was 37 KB for 120 devices, half of everything the reference city's gateway
wrote to its SD card, where the counters are 3 KB. After a power cut the counters are at most
one interval behind, so a replay window of that size is the accepted trade-off for not writing
the SD card per frame.
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


_counters_decoder = msgspec.json.Decoder(dict[str, int])


class SessionStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.counters_path = path.with_name(f"{path.stem}-fcnt{path.suffix}")
        self.by_eui: dict[str, Session] = {}
        self.by_addr: dict[int, list[Session]] = {}
        self._sessions_dirty = False
        self._counters_dirty = False
        self.writes = 0
        self._write_lock = threading.Lock()  # periodic flush and join flush may overlap

    @property
    def dirty(self) -> bool:
        return self._sessions_dirty or self._counters_dirty

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
        self._load_counters()

    def _load_counters(self) -> None:
        """Counters newer than the sessions document (frames since the last join)."""
        try:
            counters = _counters_decoder.decode(self.counters_path.read_bytes())
        except FileNotFoundError:
            return
        except (msgspec.DecodeError, UnicodeDecodeError):
            # the sessions' own counters stand: the replay window is the time since the join
            self.counters_path.replace(self.counters_path.with_suffix(".corrupt"))
            return
        for dev_eui, fcnt in counters.items():
            session = self.by_eui.get(dev_eui)
            if session is not None and fcnt > session.fcnt_up:
                session.fcnt_up = fcnt

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
        self._sessions_dirty = True

    def touch(self) -> None:
        """An uplink counter moved."""
        self._counters_dirty = True

    def snapshot(self) -> list[tuple[Path, bytes]]:
        """The documents to write, encoded on the event loop; `write` may then run in a thread.

        Counters first: they are keyed by DevEUI alone and applied, at load, to whatever session
        the sessions document holds for that DevEUI. Written second, a power cut (or a full disk)
        between the two writes after a rejoin left the new session (no frames yet) beside the
        old session's counter, and every frame of the device was refused as a replay until its
        FCnt passed the old one (months, for a sensor reporting every few minutes). Written
        first, the same cut leaves the old session beside counters that no longer name it (a
        fresh session has none): the old session keeps its own counter and the device's next
        join replaces it."""
        files: list[tuple[Path, bytes]] = []
        if self._sessions_dirty or self._counters_dirty:
            counters = {eui: s.fcnt_up for eui, s in self.by_eui.items() if s.fcnt_up >= 0}
            files.append((self.counters_path, msgspec.json.encode(counters)))
        if self._sessions_dirty:
            files.append((self.path, msgspec.json.encode(_Document(sessions=list(self.by_eui.values())))))
        self._sessions_dirty = self._counters_dirty = False
        return files

    def unwritten(self, files: list[tuple[Path, bytes]]) -> None:
        """A write of `files` failed (disk full): write them again at the next flush."""
        for path, _ in files:
            if path == self.path:
                self._sessions_dirty = True
            else:
                self._counters_dirty = True

    def write(self, files: list[tuple[Path, bytes]]) -> None:
        for path, data in files:
            self._write_file(path, data)
        if files:
            self.writes += 1

    def _write_file(self, path: Path, data: bytes) -> None:
        with self._write_lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            # Created 0600 (the umask can only remove bits), and set again in case a temp file
            # of an older run was left with other bits: the keys are never readable by others.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), FILE_MODE)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(path)

    def flush(self) -> None:
        if self.dirty:
            self.write(self.snapshot())
