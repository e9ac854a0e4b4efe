"""The durable outbox on the SD card (design.md, Outbox).

SQLite in WAL mode with `synchronous=NORMAL`: a commit is one append to the WAL without an fsync,
and the WAL is synced at checkpoints, so a power cut loses at most the last commits, never the
database. Everything a tick produced (closed windows, revisions, events, acknowledgements, the
window checkpoint) goes into one transaction: commits are grouped, never one per reading.

Tables
- `batches`: the queue, one JSON document per row, `seq` monotonic within the database's
  `stream`. Bounded by payload bytes: when full the oldest batches are evicted, counted, logged
  with their seq range and remembered in `evictions`, and every uplink's cursor moves past them.
- `cursors`: per uplink, every batch with seq <= cursor was acknowledged (or dead-lettered or
  evicted). A batch is deleted once every configured uplink's cursor passed it. Acknowledgements
  above a cursor are held in memory until the gap below closes; after a crash those batches are
  sent again (at least once; the platform removes duplicates by batch id and window key).
- `dead_letters`: batches an uplink's platform refused as malformed, kept for inspection.
- `open_log`: the checkpoint of open windows as an append-only log. Each checkpoint appends one
  compressed row holding only the accumulators changed since the previous one, so a checkpoint
  costs bytes in proportion to what changed; a restart replays the rows in order. A row is
  deleted once every window it holds has closed (`max_start` below the close boundary).
- `closed_windows`: one compressed row per window start with the aggregate and revision of every
  series closed in it, kept for `max_lateness`: a late reading merges into it and becomes a
  revision (gateway.revisions decides what is revised; this module only stores).
- `carry`: the last reading of each counter and state series, one row per series, written only
  when it changed: what the next window starts from, and the content of keyframes.

All methods run on the outbox's own thread (the runtime's single-thread executor); none of them
may be called from the event loop directly.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.batch import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Batch,
    BatchDocument,
    CarryEndRecord,
    EventRecord,
    KeyframeRecord,
    WindowRecord,
    encode_document,
)
from gateway.errors import StorageError
from gateway.metrics import PREFIX
from gateway.model import Event
from gateway.model import metric as catalog_metric
from gateway.revisions import close_records
from gateway.windows import CloseResult

__all__ = ["Commit", "CommitReport", "Outbox", "OutboxMetrics", "OutboxStats", "Restored"]

log = structlog.get_logger("outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    records INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    payload BLOB NOT NULL,
    readings INTEGER NOT NULL DEFAULT 0  -- readings its windows cover (+ events): what an eviction loses
);
CREATE INDEX IF NOT EXISTS batches_kind ON batches(kind, seq);
CREATE TABLE IF NOT EXISTS cursors (uplink TEXT PRIMARY KEY, acked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    uplink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (uplink, seq)
);
CREATE TABLE IF NOT EXISTS evictions (
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    batches INTEGER NOT NULL,
    records INTEGER NOT NULL,
    at REAL NOT NULL,
    readings INTEGER NOT NULL DEFAULT 0
);
-- rowid order is checkpoint order: appends touch only the last page of the tree
CREATE TABLE IF NOT EXISTS open_log (id INTEGER PRIMARY KEY, max_start INTEGER NOT NULL, blob BLOB NOT NULL);
-- keyed by window start: each close appends at the end of the tree
CREATE TABLE IF NOT EXISTS closed_windows (start INTEGER PRIMARY KEY, blob BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS carry (
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts REAL NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (device, metric)
) WITHOUT ROWID;
"""

# SQLite page size of a new outbox database (an existing one keeps its own).
PAGE_SIZE = 1024
CACHE_KIB = 256  # SQLite page cache bound, KiB (PRAGMA cache_size)
# Dead letters kept at most (oldest deleted first): they are for inspection, not delivery.
DEAD_LETTER_LIMIT = 1000
# closed_windows rows past max_lateness are pruned at most this often (seconds); the window
# state's size is measured this often too, and at every commit once the outbox is this full.
PRUNE_INTERVAL = 60.0
STATE_RECOUNT_AT = 0.9

_acc_encoder = msgspec.msgpack.Encoder()
_acc_decoder = msgspec.msgpack.Decoder()

SeriesKey = tuple[str, str]
# (key, ts, value) of a carried series; ts None: the series is no longer carried
CarryChange = tuple[SeriesKey, "float | None", Any]


@dataclass
class Commit:
    """Everything one tick hands to the outbox; `merge_from` folds a failed tick into the next."""

    now: float
    close: CloseResult | None = None
    events: list[Event] = field(default_factory=list)
    # open-window checkpoints, oldest first: (highest window start inside, compressed rows)
    checkpoints: list[tuple[int, bytes]] = field(default_factory=list)
    carry: list[CarryChange] = field(default_factory=list)
    keyframe: list[KeyframeRecord] | None = None
    acks: dict[str, list[int]] = field(default_factory=dict)
    dead: list[tuple[str, int, str]] = field(default_factory=list)  # (uplink, seq, reason)

    def merge_from(self, older: Commit) -> None:
        if older.close is not None:
            if self.close is None:
                self.close = older.close
            else:
                self.close = CloseResult(
                    older.close.closed + self.close.closed,
                    older.close.late + self.close.late,
                    max(older.close.closed_before, self.close.closed_before),
                    older.close.ended + self.close.ended,
                    {**self.close.late_priors, **older.close.late_priors},
                )
        self.events = older.events + self.events
        self.checkpoints = older.checkpoints + self.checkpoints
        self.carry = older.carry + self.carry
        if self.keyframe is None:
            self.keyframe = older.keyframe
        for name, seqs in older.acks.items():
            self.acks.setdefault(name, []).extend(seqs)
        self.dead = older.dead + self.dead

    def __bool__(self) -> bool:
        # a close with no records still moves the persisted close boundary
        return bool(
            self.close is not None
            or self.events
            or self.checkpoints
            or self.carry
            or self.keyframe
            or self.acks
            or self.dead
        )


@dataclass
class CommitReport:
    batches: int = 0
    records: int = 0
    revisions: int = 0
    events: int = 0
    evicted_batches: int = 0
    evicted_records: int = 0
    evicted_readings: int = 0
    deleted: int = 0


@dataclass
class Restored:
    stream: str
    closed_before: int
    open_rows: list[tuple[int, tuple[str, str], list[Any]]]
    carry: list[tuple[tuple[str, str], float, Any]]
    skipped_checkpoint_rows: int = 0


@dataclass
class OutboxStats:
    batches: int = 0
    bytes: int = 0
    commits: int = 0
    bytes_committed: int = 0
    evicted_batches: int = 0
    evicted_records: int = 0
    evicted_readings: int = 0
    dead_letters: int = 0
    records_written: int = 0
    revisions: int = 0
    batches_written: int = 0
    checkpoint_rows_skipped: int = 0
    state_bytes: int = 0  # window state on disk, counted against max_bytes with the batches


class OutboxMetrics:
    """The outbox's figures on `/metrics`: what it holds against its bound, what it committed,
    evicted and dead-lettered, the revisions it made. Read at scrape time from `Outbox.stats`,
    which the outbox thread keeps (plain integers: a scrape takes no lock of the writer's)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def collect(self) -> Iterator[Metric]:
        o = self.outbox.stats
        yield CounterMetricFamily(PREFIX + "windows_revised", "Revisions of closed windows from late readings",
                                  value=o.revisions)
        for name, text, value in (
            ("outbox_batches", "Batches stored in the outbox", o.batches),
            ("outbox_bytes", "Payload bytes stored in the outbox", o.bytes),
            ("outbox_max_bytes", "Configured outbox bound", self.outbox.max_bytes),
        ):
            yield GaugeMetricFamily(PREFIX + name, text, value=value)
        for name, text, value in (
            ("outbox_commits", "Grouped commits", o.commits),
            ("outbox_batches_written", "Batches made and committed", o.batches_written),
            ("outbox_bytes_written", "Batch payload bytes committed", o.bytes_committed),
            ("outbox_records_written", "Window records committed", o.records_written),
            ("outbox_evicted_batches", "Batches evicted because the outbox was full", o.evicted_batches),
            ("outbox_evicted_records", "Window records in evicted batches", o.evicted_records),
            ("outbox_evicted_readings", "Readings covered by the window records and events of evicted batches",
             o.evicted_readings),
            ("outbox_dead_letters", "Batches moved to the dead-letter table", o.dead_letters),
        ):
            yield CounterMetricFamily(PREFIX + name, text, value=value)


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        gateway_id: str,
        uplinks: Iterable[str],
        window: int,
        max_lateness: float,
        max_bytes: int,
        batch_max_records: int,
        clock: Any = time.time,
    ) -> None:
        self.path = Path(path)
        self.gateway_id = gateway_id
        self.uplinks = list(uplinks)
        self.window = window
        self.max_lateness = max_lateness
        self.max_bytes = max_bytes
        self.batch_max_records = batch_max_records
        self.clock = clock
        self.stats = OutboxStats()
        self.metrics = OutboxMetrics(self)
        self.stream = ""
        self._db: sqlite3.Connection | None = None
        self._next_seq = 1
        self._cursor: dict[str, int] = {}
        self._acked_above: dict[str, set[int]] = {}
        # each uplink runner's live set of batches it holds (see `pending`): eviction stops
        # below the lowest of them
        self._held: dict[str, set[int]] = {}
        self._last_prune = 0.0
        self._state_counted = 0.0  # commit time the window state's size was last measured

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> Restored:
        """Open (or create) the database and return what the windows resume from."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(self.path.parent, os.W_OK):
                raise PermissionError(f"no write permission on {self.path.parent}")
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # 1 KiB pages, set before the database is first written: a commit appends every page
            # it touched to the WAL, and most commits touch a few small rows (cursors, meta, a
            # queue entry) in different pages; with 4 KiB pages each of those cost 4 KiB.
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # WAL checkpoints every ~4 MiB: fewer syncs, fewer SD writes.
            db.execute(f"PRAGMA wal_autocheckpoint={4 * 1024 * 1024 // PAGE_SIZE}")
            # SQLite's page cache, 2 MiB by default, filled up during a run and stayed resident
            # (issue 12: the gateway's RSS grew through a run). Commits touch the newest pages,
            # reads of older batches come from the kernel's file cache.
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            db.executescript(_SCHEMA)
            for table in ("batches", "evictions"):  # databases made before the column existed
                columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if "readings" not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN readings INTEGER NOT NULL DEFAULT 0")
        except (sqlite3.Error, OSError) as error:
            raise StorageError(f"cannot open outbox database {self.path}: {error}") from error
        self._db = db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "stream" not in meta:
            meta["stream"] = secrets.token_hex(8)
            db.execute("INSERT INTO meta VALUES ('stream', ?)", (meta["stream"],))
        self.stream = meta["stream"]
        last_seq = int(meta.get("last_seq", "0"))
        row = db.execute("SELECT MAX(seq), COUNT(*), COALESCE(SUM(bytes), 0) FROM batches").fetchone()
        self._next_seq = max(last_seq, row[0] or 0) + 1
        self.stats.batches, self.stats.bytes = row[1], row[2]
        oldest = db.execute("SELECT MIN(seq) FROM batches").fetchone()[0]
        stored = dict(db.execute("SELECT uplink, acked FROM cursors").fetchall())
        for name in self.uplinks:
            start = stored.get(name)
            if start is None:
                start = (oldest - 1) if oldest is not None else self._next_seq - 1
            self._cursor[name] = start
            self._acked_above[name] = set()
        self.stats.dead_letters = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        # evictions are counted across restarts: a gap evicted before a crash stays named
        evicted = db.execute(
            "SELECT COALESCE(SUM(batches), 0), COALESCE(SUM(records), 0), COALESCE(SUM(readings), 0) FROM evictions"
        ).fetchone()
        self.stats.evicted_batches, self.stats.evicted_records = int(evicted[0]), int(evicted[1])
        self.stats.evicted_readings = int(evicted[2])
        self.stats.state_bytes = self._state_bytes(db)
        closed_before = int(meta.get("closed_before", str(-(2**62))))
        open_rows, skipped = self._replay_open_log(db, closed_before)
        self.stats.checkpoint_rows_skipped = skipped
        carry = []
        for device, metric, ts, value in db.execute("SELECT device, metric, ts, value FROM carry"):
            try:
                carry.append(((device, metric), ts, _acc_decoder.decode(value)))
            except msgspec.DecodeError:
                skipped += 1
        return Restored(self.stream, closed_before, open_rows, carry, skipped)

    def _replay_open_log(
        self, db: sqlite3.Connection, closed_before: int
    ) -> tuple[list[tuple[int, tuple[str, str], list[Any]]], int]:
        """Open accumulators from the checkpoint log: later rows hold newer versions. A row that
        does not decode (torn write, bad sector) is counted and skipped with one log line: the
        rows after it still hold every accumulator changed later."""
        latest: dict[tuple[int, str, str], list[Any]] = {}
        skipped = 0
        for row_id, blob in db.execute("SELECT id, blob FROM open_log ORDER BY id"):
            try:
                entries = _acc_decoder.decode(zlib.decompress(blob))
                for start, device, metric, acc in entries:
                    if start >= closed_before:
                        latest[(start, device, metric)] = acc
            except (zlib.error, msgspec.DecodeError, TypeError, ValueError) as error:
                skipped += 1
                log.warning("checkpoint_row_skipped", row=row_id, reason=str(error),
                            note="a corrupt open-window checkpoint row was skipped and counted")
        return [(start, (device, metric), acc) for (start, device, metric), acc in latest.items()], skipped

    def set_uplinks(self, names: Iterable[str]) -> None:
        """The configured uplinks changed (a reload). An added one gets the cursor a restart
        would give it (just below the oldest batch stored); a removed one's cursor is forgotten,
        so batches only it had not acknowledged are deleted by the next commit instead of being
        held for it forever. Cursors of the uplinks that stay are untouched."""
        names = list(names)
        if self._db is not None:
            db = self.db
            oldest = db.execute("SELECT MIN(seq) FROM batches").fetchone()[0]
            for name in names:
                if name not in self._cursor:
                    self._cursor[name] = (oldest - 1) if oldest is not None else self._next_seq - 1
                    self._acked_above[name] = set()
            for name in [n for n in self._cursor if n not in names]:
                del self._cursor[name]
                self._acked_above.pop(name, None)
                try:
                    db.execute("DELETE FROM cursors WHERE uplink = ?", (name,))
                except sqlite3.Error as error:
                    # harmless if it stays: a start ignores the cursors of unconfigured uplinks
                    log.warning("stale_cursor_kept", uplink=name, reason=str(error))
        self.uplinks = names

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("outbox is not open")
        return self._db

    # -- the grouped commit ------------------------------------------------------------------

    def commit(self, commit: Commit) -> CommitReport:
        """Apply one tick in one transaction. On failure nothing of it is applied."""
        db = self.db
        report = CommitReport()
        next_seq = self._next_seq
        cursors = dict(self._cursor)
        acked = {name: set(s) for name, s in self._acked_above.items()}
        try:
            db.execute("BEGIN IMMEDIATE")
            self._apply_acks(db, commit, cursors, acked)
            records = self._window_records(db, commit, report)
            if commit.checkpoints:
                db.executemany("INSERT INTO open_log (max_start, blob) VALUES (?, ?)", commit.checkpoints)
            if commit.close is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('closed_before', ?)",
                    (str(commit.close.closed_before),),
                )
                db.execute("DELETE FROM open_log WHERE max_start < ?", (commit.close.closed_before,))
            if commit.carry:
                self._write_carry(db, commit.carry)
            written_bytes = 0
            ended = _carry_ends(commit.close.ended) if commit.close is not None else []
            closed_before = commit.close.closed_before if commit.close is not None else 0
            keyframe = commit.keyframe or []
            if records or keyframe or ended:
                for start in range(0, max(1, len(records)), self.batch_max_records):
                    chunk = records[start : start + self.batch_max_records]
                    written_bytes += self._insert_batch(
                        db, next_seq, "windows", chunk, [], commit.now, keyframe=keyframe, ended=ended,
                        closed=closed_before,
                    )
                    keyframe, ended = [], []  # in the first batch of the commit only
                    next_seq += 1
                    report.batches += 1
            if commit.events:
                events = [
                    EventRecord(
                        device=e.device, ts=e.ts, name=e.name, severity=str(e.severity),
                        metric=e.metric, value=e.value, detail=e.detail or None,
                    )
                    for e in commit.events
                ]
                written_bytes += self._insert_batch(db, next_seq, "events", [], events, commit.now)
                next_seq += 1
                report.batches += 1
                report.events = len(events)
            if next_seq != self._next_seq:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (str(next_seq - 1),))
            total = self.stats.bytes + written_bytes
            total -= self._delete_delivered(db, cursors, report)
            # window state shares the bound: batches give way to it, oldest first, but never a
            # batch written by this very commit (it would be lost before any uplink saw it)
            # measuring the state scans the carry table: only near the bound or once a minute
            state_bytes = self.stats.state_bytes
            if total + state_bytes > self.max_bytes * STATE_RECOUNT_AT or commit.now - self._state_counted >= PRUNE_INTERVAL:
                state_bytes = self._state_bytes(db)
                self._state_counted = commit.now
            below = min([self._next_seq, *(self._lowest_held(name) for name in cursors)])
            total -= self._evict(db, total, state_bytes, cursors, acked, report, below=below)
            for name, value in cursors.items():
                if value != self._cursor.get(name):
                    db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (name, value))
            if commit.now - self._last_prune >= PRUNE_INTERVAL:
                horizon = commit.close.closed_before if commit.close else None
                if horizon is not None:
                    db.execute(
                        "DELETE FROM closed_windows WHERE start < ?",
                        (int(horizon - self.window - self.max_lateness - self.window),),
                    )
            db.execute("COMMIT")
        except sqlite3.Error as error:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StorageError(_storage_reason(error, self.path)) from error
        # the transaction is durable (to the WAL): publish the new state
        if commit.now - self._last_prune >= PRUNE_INTERVAL and commit.close is not None:
            self._last_prune = commit.now
        self._next_seq = next_seq
        self._cursor = cursors
        self._acked_above = acked
        self.stats.batches += report.batches - report.evicted_batches - report.deleted
        self.stats.bytes = total
        self.stats.commits += 1
        self.stats.batches_written += report.batches
        self.stats.bytes_committed += written_bytes
        self.stats.records_written += report.records
        self.stats.revisions += report.revisions
        self.stats.evicted_batches += report.evicted_batches
        self.stats.evicted_records += report.evicted_records
        self.stats.evicted_readings += report.evicted_readings
        self.stats.dead_letters += len(commit.dead)
        return report

    def _window_records(self, db: sqlite3.Connection, commit: Commit, report: CommitReport) -> list[WindowRecord]:
        if commit.close is None:
            return []
        store = _ClosedWindows(db)
        records, revisions = close_records(
            commit.close, window=self.window, max_lateness=self.max_lateness, store=store
        )
        store.flush()
        report.revisions += revisions
        report.records = len(records)
        return records

    @staticmethod
    def _write_carry(db: sqlite3.Connection, changes: list[CarryChange]) -> None:
        latest: dict[SeriesKey, tuple[float | None, Any]] = {}
        for key, ts, value in changes:
            latest[key] = (ts, value)
        gone = [key for key, (ts, _) in latest.items() if ts is None]
        if gone:
            db.executemany("DELETE FROM carry WHERE device = ? AND metric = ?", gone)
        db.executemany(
            "INSERT OR REPLACE INTO carry VALUES (?, ?, ?, ?)",
            [(key[0], key[1], ts, _acc_encoder.encode(value)) for key, (ts, value) in latest.items() if ts is not None],
        )

    def _insert_batch(
        self,
        db: sqlite3.Connection,
        seq: int,
        kind: str,
        windows: list[WindowRecord],
        events: list[EventRecord],
        now: float,
        *,
        keyframe: list[KeyframeRecord] | None = None,
        ended: list[CarryEndRecord] | None = None,
        closed: int = 0,
    ) -> int:
        document = BatchDocument(
            schema=SCHEMA_NAME,
            version=SCHEMA_VERSION,
            gateway=self.gateway_id,
            stream=self.stream,
            seq=seq,
            batch_id=f"{self.gateway_id}:{self.stream}:{seq}",
            created=round(now, 3),
            windows=windows,
            events=events,
            keyframe=keyframe or [],
            ended=ended or [],
            closed=closed if kind == "windows" else 0,
        )
        payload = encode_document(document)
        db.execute(
            "INSERT INTO batches (seq, kind, created, records, bytes, payload, readings) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, kind, now, len(windows) + len(events) + len(keyframe or ()) + len(ended or ()), len(payload), payload,
             sum(w.count for w in windows) + len(events)),
        )
        return len(payload)

    def _apply_acks(
        self, db: sqlite3.Connection, commit: Commit, cursors: dict[str, int], acked: dict[str, set[int]]
    ) -> None:
        for name, seq, reason in commit.dead:
            row = db.execute("SELECT payload FROM batches WHERE seq=?", (seq,)).fetchone()
            if row is not None:
                db.execute(
                    "INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?)",
                    (name, seq, commit.now, reason, row[0]),
                )
            commit.acks.setdefault(name, []).append(seq)
        if commit.dead:
            db.execute(
                "DELETE FROM dead_letters WHERE rowid NOT IN "
                "(SELECT rowid FROM dead_letters ORDER BY at DESC LIMIT ?)",
                (DEAD_LETTER_LIMIT,),
            )
        for name, seqs in commit.acks.items():
            if name not in cursors:
                continue
            above = acked[name]
            cursor = cursors[name]
            above.update(s for s in seqs if s > cursor)
            while cursor + 1 in above:
                cursor += 1
                above.discard(cursor)
            cursors[name] = cursor

    @staticmethod
    def _state_bytes(db: sqlite3.Connection) -> int:
        """Stored bytes of window state: closed windows kept for revisions, the open-window
        log and the carried values."""
        row = db.execute(
            "SELECT (SELECT COALESCE(SUM(length(blob)), 0) FROM closed_windows)"
            " + (SELECT COALESCE(SUM(length(blob)), 0) FROM open_log)"
            " + (SELECT COALESCE(SUM(length(value) + length(device) + length(metric) + 8), 0) FROM carry)"
        ).fetchone()
        return int(row[0])

    def _evict(
        self,
        db: sqlite3.Connection,
        total: int,
        state_bytes: int,
        cursors: dict[str, int],
        acked: dict[str, set[int]],
        report: CommitReport,
        *,
        below: int,
    ) -> int:
        """Drop the oldest batches (seq < `below`) until batches and window state fit the
        bound; returns the batch bytes freed."""
        self.stats.state_bytes = state_bytes
        if total + state_bytes <= self.max_bytes:
            return 0
        freed = 0
        last = None
        lost: list[tuple[int, int, int]] = []  # (seq, records, readings) of batches some uplink never got
        delivered = 0
        for seq, size, n, readings in db.execute(
            "SELECT seq, bytes, records, readings FROM batches WHERE seq < ? ORDER BY seq", (below,)
        ):
            if total + state_bytes - freed <= self.max_bytes:
                break
            last = seq
            freed += size
            # acknowledged by every uplink (above its cursor, out of order): delivered, not lost
            if all(seq <= cursors[name] or seq in acked[name] for name in cursors):
                delivered += 1
            else:
                lost.append((seq, n, readings))
        if last is None:
            return 0
        db.execute("DELETE FROM batches WHERE seq <= ?", (last,))
        report.deleted += delivered
        for name in cursors:
            if cursors[name] < last:
                cursors[name] = last
            acked[name] = {s for s in acked[name] if s > last}
            while cursors[name] + 1 in acked[name]:
                cursors[name] += 1
                acked[name].discard(cursors[name])
        for first, end, count, records, readings in _runs(lost):
            db.execute(
                "INSERT INTO evictions (first_seq, last_seq, batches, records, at, readings) VALUES (?, ?, ?, ?, ?, ?)",
                (first, end, count, records, self.clock(), readings),
            )
            report.evicted_batches += count
            report.evicted_records += records
            report.evicted_readings += readings
            log.warning(
                "outbox_evicted",
                first_seq=first,
                last_seq=end,
                batches=count,
                records=records,
                max_bytes=self.max_bytes,
                note="outbox full: the oldest batches were evicted (counted in outbox_evicted_batches_total)",
            )
        return freed

    def _delete_delivered(self, db: sqlite3.Connection, cursors: dict[str, int], report: CommitReport) -> int:
        if not cursors:
            return 0
        delivered = min(cursors.values())
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM batches WHERE seq <= ?", (delivered,)
        ).fetchone()
        if row[0]:
            db.execute("DELETE FROM batches WHERE seq <= ?", (delivered,))
        report.deleted = row[0]
        return int(row[1])

    # -- reading for uplinks -----------------------------------------------------------------

    def _lowest_held(self, uplink: str) -> int:
        # set.copy() runs under the GIL in one step: the runner adds and discards on the loop
        # thread while this runs on the outbox thread
        held = self._held.get(uplink)
        return min(held.copy(), default=self._next_seq) if held else self._next_seq

    def pending(self, uplink: str, exclude: set[int], limit: int, *, held: set[int] | None = None) -> list[Batch]:
        """Batches this uplink has not acknowledged: events first, then the oldest windows.

        `held` is the caller's live set of batches that must not be evicted: the ones returned
        are added to it here, on the outbox thread, so no commit can evict a batch between
        being handed out and being sent. The caller keeps each one there while it is under way
        and until its acknowledgement rides a commit (which applies acknowledgements before it
        evicts); a batch evicted in between would be counted as lost although it arrived."""
        if held is not None:
            self._held[uplink] = held
        out = self._pending(uplink, exclude, limit)
        if held is not None:
            held.update(batch.seq for batch in out)
        return out

    def _pending(self, uplink: str, exclude: set[int], limit: int) -> list[Batch]:
        db = self.db
        cursor = self._cursor[uplink]
        skip = exclude | self._acked_above[uplink]
        out: list[Batch] = []
        for kind in ("events", "windows"):
            if len(out) >= limit:
                break
            rows = db.execute(
                "SELECT seq, kind, payload, records, created FROM batches WHERE kind = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (kind, cursor, limit - len(out) + len(skip)),
            )
            for seq, k, payload, records, created in rows:
                if seq in skip:
                    continue
                out.append(Batch(seq=seq, kind=k, payload=payload, records=records, created=created))
                if len(out) >= limit:
                    break
        return out

    def backlog(self, uplink: str) -> int:
        """Batches stored that this uplink has not acknowledged."""
        cursor = self._cursor.get(uplink, 0)
        row = self.db.execute("SELECT COUNT(*) FROM batches WHERE seq > ?", (cursor,)).fetchone()
        return int(row[0]) - len(self._acked_above.get(uplink, ()))

    def cursor(self, uplink: str) -> int:
        return self._cursor[uplink]

    def evictions(self) -> list[tuple[int, int, int, int]]:
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT first_seq, last_seq, batches, records FROM evictions ORDER BY first_seq"
        )]

    def dead_letter_rows(self) -> list[tuple[str, int, str]]:
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT uplink, seq, reason FROM dead_letters ORDER BY seq"
        )]


def encode_checkpoint(rows: list[tuple[int, tuple[str, str], list[Any]]]) -> tuple[int, bytes] | None:
    """Serialise changed open accumulators on the loop (a consistent snapshot) into one
    compressed checkpoint row: (highest window start inside, blob)."""
    if not rows:
        return None
    entries = [(start, key[0], key[1], acc) for start, key, acc in rows]
    return max(start for start, _, _ in rows), zlib.compress(_acc_encoder.encode(entries), 6)


def _carry_ends(ended: list[Any]) -> list[CarryEndRecord]:
    return [
        CarryEndRecord(device=key[0], metric=key[1], unit=catalog_metric(key[1]).unit, since=ts, state=value, start=start)
        for key, ts, value, start in ended
    ]


def _runs(batches: list[tuple[int, int, int]]) -> list[tuple[int, int, int, int, int]]:
    """Contiguous seq ranges of (seq, records, readings): (first, last, batches, records,
    readings) each."""
    out: list[tuple[int, int, int, int, int]] = []
    for seq, records, readings in batches:
        if out and out[-1][1] == seq - 1:
            first, _, count, total, covered = out[-1]
            out[-1] = (first, seq, count + 1, total + records, covered + readings)
        else:
            out.append((seq, seq, 1, records, readings))
    return out


class _ClosedWindows:
    """`gateway.revisions.WindowStore` on the closed_windows table, for one transaction: a row
    (one window start, every series closed in it) is read once, changed in memory and written
    back once when the commit flushes."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._rows: dict[int, dict[SeriesKey, tuple[int, list[Any]]]] = {}
        self._changed: set[int] = set()

    def _row(self, start: int) -> dict[SeriesKey, tuple[int, list[Any]]]:
        row = self._rows.get(start)
        if row is None:
            row = {}
            found = self._db.execute("SELECT blob FROM closed_windows WHERE start = ?", (start,)).fetchone()
            if found is not None:
                try:
                    for device, metric, revision, acc in _acc_decoder.decode(zlib.decompress(found[0])):
                        row[(device, metric)] = (revision, acc)
                except (zlib.error, msgspec.DecodeError, TypeError, ValueError) as error:
                    log.warning("closed_window_row_unreadable", start=start, reason=str(error))
            self._rows[start] = row
        return row

    def get(self, start: int, key: SeriesKey) -> tuple[int, list[Any]] | None:
        return self._row(start).get(key)

    def put(self, start: int, key: SeriesKey, revision: int, acc: list[Any]) -> None:
        self._row(start)[key] = (revision, acc)
        self._changed.add(start)

    def flush(self) -> None:
        rows = []
        for start in sorted(self._changed):
            entries = [(k[0], k[1], rev, acc) for k, (rev, acc) in self._rows[start].items()]
            rows.append((start, zlib.compress(_acc_encoder.encode(entries), 6)))
        self._db.executemany("INSERT OR REPLACE INTO closed_windows VALUES (?, ?)", rows)


def _storage_reason(error: sqlite3.Error, path: Path) -> str:
    text = str(error)
    if "full" in text:
        return f"disk full: cannot write the outbox {path} ({text}); nothing stored was lost, retrying"
    if "readonly" in text or "read-only" in text or "permission" in text.lower():
        return f"state directory not writable: {path} ({text})"
    return f"outbox write failed: {path} ({text})"
