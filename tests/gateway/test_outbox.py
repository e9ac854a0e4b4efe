"""Outbox: grouped commits, cursors, eviction, dead letters, checkpoints, a full disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.model import Event, Reading
from gateway.outbox import Commit, Outbox, encode_checkpoint
from gateway.windows import Aggregator

T0 = 1_767_225_600


def make(tmp_path: Path, uplinks: tuple[str, ...] = ("a",), max_bytes: int = 1 << 30, per_batch: int = 10) -> Outbox:
    ob = Outbox(tmp_path / "outbox.sqlite", gateway_id="gw", uplinks=uplinks, window=60,
                max_lateness=3600, max_bytes=max_bytes, batch_max_records=per_batch)
    ob.open()
    return ob


def closed_windows(n_devices: int, start: int = T0) -> Commit:
    agg = Aggregator(window=60, grace=0, now=start)
    for i in range(n_devices):
        agg.add(Reading(f"d{i}", "temperature", float(i), start + 1))
    return Commit(now=start + 60, close=agg.close_due(start + 60))


def test_closed_windows_become_numbered_batches_in_one_commit(tmp_path: Path) -> None:
    ob = make(tmp_path)
    report = ob.commit(closed_windows(25))
    assert (report.batches, report.records) == (3, 25)
    batches = ob.pending("a", set(), 10)
    assert [b.seq for b in batches] == [1, 2, 3]
    doc = batches[0].document()
    assert (doc.gateway, doc.seq, doc.batch_id) == ("gw", 1, f"gw:{ob.stream}:1")
    assert sum(b.records for b in batches) == 25


def test_events_go_ahead_of_the_backlog(tmp_path: Path) -> None:
    ob = make(tmp_path)
    ob.commit(closed_windows(25))
    ob.commit(Commit(now=T0 + 61, events=[Event(device="ocpp:cp/1", ts=T0, name="connector_status", value="Faulted")]))
    pending = ob.pending("a", set(), 2)
    assert [b.kind for b in pending] == ["events", "windows"] and pending[0].seq == 4


def test_a_batch_is_deleted_only_when_every_uplink_acknowledged_it(tmp_path: Path) -> None:
    ob = make(tmp_path, uplinks=("mqtt", "influx"))
    ob.commit(closed_windows(30))
    ob.commit(Commit(now=T0 + 61, acks={"mqtt": [1, 2, 3]}))
    assert ob.stats.batches == 3 and ob.pending("mqtt", set(), 10) == []
    ob.commit(Commit(now=T0 + 62, acks={"influx": [2]}))  # out of order: cursor waits for 1
    assert ob.cursor("influx") == 0 and ob.stats.batches == 3
    ob.commit(Commit(now=T0 + 63, acks={"influx": [1]}))
    assert ob.cursor("influx") == 2 and ob.stats.batches == 1
    assert [b.seq for b in ob.pending("influx", set(), 10)] == [3]


def test_cursors_survive_a_restart_and_unacked_batches_are_sent_again(tmp_path: Path) -> None:
    ob = make(tmp_path)
    ob.commit(closed_windows(30))
    ob.commit(Commit(now=T0 + 61, acks={"a": [1, 3]}))
    ob.close()
    again = make(tmp_path)
    assert again.cursor("a") == 1
    # 3 was acknowledged above the cursor only in memory: at least once means it comes again
    assert [b.seq for b in again.pending("a", set(), 10)] == [2, 3]
    again.commit(closed_windows(5, start=T0 + 60))
    assert again.pending("a", set(), 10)[-1].seq == 4, "sequence continues after a restart"


def test_a_batch_under_way_is_never_evicted_before_its_answer(tmp_path: Path) -> None:
    """Handed out, then the outbox fills: eviction stops below it (its PUBACK may be on the
    wire; counting it as lost and then having it arrive would name a gap the platform never
    saw). Once its answer is committed, or the send failed, it is evicted like any other."""
    ob = make(tmp_path, max_bytes=64 * 1024, per_batch=50)
    ob.commit(closed_windows(50))
    ob.commit(closed_windows(50, start=T0 + 60))
    held: set[int] = set()
    assert [b.seq for b in ob.pending("a", set(), 1, held=held)] == [1] and held == {1}
    for i in range(2, 200):
        ob.commit(closed_windows(50, start=T0 + 60 * i))
    assert ob.stats.evicted_batches == 0 and ob.cursor("a") == 0  # held at batch 1
    held.discard(1)  # the send failed: batch 1 is an ordinary unacknowledged batch again
    ob.commit(closed_windows(50, start=T0 + 60 * 200))
    assert ob.evictions()[0][0] == 1 and ob.stats.bytes <= 64 * 1024


def test_full_outbox_evicts_oldest_batches_counts_them_and_moves_cursors(tmp_path: Path) -> None:
    ob = make(tmp_path, max_bytes=64 * 1024, per_batch=50)
    for i in range(200):  # ~500 compressed bytes a batch
        ob.commit(closed_windows(50, start=T0 + 60 * i))
    assert ob.stats.bytes <= 64 * 1024
    # every batch written is either still stored or counted as evicted (nothing acknowledged)
    stored = ob.db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    assert ob.stats.batches == stored < 200 and ob.stats.evicted_batches == 200 - stored
    evicted = ob.evictions()
    first = evicted[0][0]
    last = evicted[-1][1]
    assert first == 1 and sum(e[2] for e in evicted) == ob.stats.evicted_batches == last
    assert ob.stats.evicted_records == 50 * ob.stats.evicted_batches
    assert ob.pending("a", set(), 1)[0].seq == last + 1
    assert ob.cursor("a") == last


def test_rejected_batch_goes_to_dead_letters_and_the_queue_moves_on(tmp_path: Path) -> None:
    ob = make(tmp_path)
    ob.commit(closed_windows(20))
    ob.commit(Commit(now=T0 + 61, dead=[("a", 1, "HTTP 400: bad field")], acks={"a": [2]}))
    assert ob.dead_letter_rows() == [("a", 1, "HTTP 400: bad field")]
    assert ob.cursor("a") == 2 and ob.stats.batches == 0 and ob.stats.dead_letters == 1


def test_checkpointed_open_windows_are_restored(tmp_path: Path) -> None:
    ob = make(tmp_path)
    agg = Aggregator(window=60, grace=0, now=T0)
    agg.add(Reading("d", "temperature", 1.0, T0 + 1))
    agg.add(Reading("d", "temperature", 3.0, T0 + 2))
    row = encode_checkpoint(agg.dirty_open())
    assert row is not None and row[0] == T0
    ob.commit(Commit(now=T0 + 5, close=agg.close_due(T0 + 5), checkpoints=[row]))
    assert agg.dirty_open() == [], "a checkpoint marks accumulators clean"
    ob.close()
    restored = make(tmp_path).open()
    again = Aggregator(window=60, grace=0)
    assert again.restore(restored.closed_before, restored.open_rows, restored.carry) == 1
    again.add(Reading("d", "temperature", 2.0, T0 + 3))
    (start, key, acc), = again.close_due(T0 + 60).closed
    assert (start, key, acc[1], acc[2], acc[3]) == (T0, ("d", "temperature"), 3, 1.0, 3.0)


def test_disk_full_keeps_everything_stored_and_says_why(tmp_path: Path) -> None:
    ob = make(tmp_path, per_batch=1000)
    ob.commit(closed_windows(10))
    stored = ob.stats.batches
    # SQLite's own limit on the file size gives the real SQLITE_FULL path
    pages = ob.db.execute("PRAGMA page_count").fetchone()[0]
    ob.db.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(StorageError, match="disk full"):
        ob.commit(closed_windows(3000, start=T0 + 60))
    assert ob.stats.batches == stored
    assert len(ob.pending("a", set(), 100)) == stored
    ob.db.execute("PRAGMA max_page_count=1073741823")
    ob.commit(closed_windows(3000, start=T0 + 60))  # the same tick succeeds once there is room


def test_unwritable_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "outbox.sqlite").mkdir()  # a directory where the database file should be
    ob = Outbox(locked / "outbox.sqlite", gateway_id="gw", uplinks=["a"], window=60,
                max_lateness=60, max_bytes=1 << 20, batch_max_records=10)
    with pytest.raises(StorageError, match="cannot open outbox database"):
        ob.open()
    assert isinstance(sqlite3.sqlite_version, str)


def test_eviction_counters_survive_a_restart(tmp_path: Path) -> None:
    ob = make(tmp_path, max_bytes=64 * 1024, per_batch=50)
    for i in range(200):
        ob.commit(closed_windows(50, start=T0 + 60 * i))
    evicted = (ob.stats.evicted_batches, ob.stats.evicted_records)
    assert evicted == (200 - ob.stats.batches, 50 * (200 - ob.stats.batches)) and ob.stats.batches < 200
    ob.close()
    again = make(tmp_path, max_bytes=64 * 1024, per_batch=50)
    assert (again.stats.evicted_batches, again.stats.evicted_records) == evicted


def test_a_batch_is_never_evicted_by_the_commit_that_wrote_it(tmp_path: Path) -> None:
    ob = make(tmp_path, max_bytes=1, per_batch=10)  # far below one tick's batches
    report = ob.commit(closed_windows(25))
    assert (report.batches, report.evicted_batches) == (3, 0)
    assert [b.seq for b in ob.pending("a", set(), 10)] == [1, 2, 3]
    report = ob.commit(closed_windows(5, start=T0 + 60))  # the next commit makes room
    assert report.evicted_batches == 3 and [b.seq for b in ob.pending("a", set(), 10)] == [4]
    assert ob.evictions() == [(1, 3, 3, 25)]
    # one reading per window: the readings the eviction lost, counted across a restart
    assert (report.evicted_readings, ob.stats.evicted_readings) == (25, 25)
    ob.close()
    assert make(tmp_path, max_bytes=1, per_batch=10).stats.evicted_readings == 25


def test_window_state_counts_against_the_bound(tmp_path: Path) -> None:
    ob = make(tmp_path, per_batch=1000)
    ob.commit(closed_windows(500))
    state = ob.stats.state_bytes
    # a lower bound: the state's stored size is whatever zlib makes of it; the bound below is
    # set from the measured figure, so only that there is some state matters here
    assert state > 0 and ob.stats.evicted_batches == 0
    ob.close()
    # the same data under a bound that the batches alone would fit but not with the state
    tight = make(tmp_path / "tight", max_bytes=1, per_batch=1000)
    tight.max_bytes = state + 10  # room for the state and almost nothing else
    tight.commit(closed_windows(500))
    tight.commit(closed_windows(1, start=T0 + 60))
    assert tight.stats.evicted_batches == 1 and tight.stats.state_bytes >= state


def test_a_corrupt_checkpoint_row_is_counted_and_skipped_not_fatal(tmp_path: Path) -> None:
    """A torn or damaged open-window checkpoint row: counted, skipped with one log line; the
    rows after it and everything closed still load, start-up goes on."""
    ob = make(tmp_path)
    agg = Aggregator(window=60, grace=0, now=T0)
    agg.add(Reading("a", "temperature", 1.0, T0 + 1))
    first = encode_checkpoint(agg.dirty_open())
    agg.add(Reading("b", "temperature", 2.0, T0 + 2))
    second = encode_checkpoint(agg.dirty_open())
    assert first is not None and second is not None
    ob.commit(Commit(now=T0 + 3, close=agg.close_due(T0 + 3), checkpoints=[first, second]))
    ob.commit(closed_windows(3, start=T0 - 60))
    ob.db.execute("UPDATE open_log SET blob = ? WHERE id = (SELECT MIN(id) FROM open_log)", (b"\x78\x9c torn",))
    ob.close()
    again = make(tmp_path)
    restored = again.open()
    assert restored.skipped_checkpoint_rows == 1 and again.stats.checkpoint_rows_skipped == 1
    assert [(start, key) for start, key, _ in restored.open_rows] == [(T0, ("b", "temperature"))]
    assert len(again.pending("a", set(), 10)) == 1  # the closed windows' batch is intact


def test_a_batch_every_uplink_acknowledged_is_not_counted_as_evicted(tmp_path: Path) -> None:
    """Acknowledged out of order (above the cursor) and then squeezed out by a full outbox: it
    was delivered, so the platform sees no gap there and the gateway must not name one."""
    ob = make(tmp_path, per_batch=10)
    ob.commit(closed_windows(30))  # batches 1, 2, 3
    ob.commit(Commit(now=T0 + 61, acks={"a": [2]}))
    assert ob.cursor("a") == 0
    ob.max_bytes = 1
    ob.commit(closed_windows(5, start=T0 + 60))  # batch 4; 1..3 must go
    assert ob.evictions() == [(1, 1, 1, 10), (3, 3, 1, 10)]
    assert (ob.stats.evicted_batches, ob.stats.batches) == (2, 1)
    assert ob.cursor("a") == 3 and [b.seq for b in ob.pending("a", set(), 10)] == [4]


def test_a_database_from_before_the_readings_column_is_upgraded(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "outbox.sqlite")
    db.executescript("""
        CREATE TABLE batches (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, created REAL NOT NULL,
                              records INTEGER NOT NULL, bytes INTEGER NOT NULL, payload BLOB NOT NULL);
        CREATE TABLE evictions (first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
                                batches INTEGER NOT NULL, records INTEGER NOT NULL, at REAL NOT NULL);
        INSERT INTO evictions VALUES (1, 2, 2, 20, 0.0);
    """)
    db.close()
    ob = make(tmp_path)
    assert (ob.stats.evicted_batches, ob.stats.evicted_readings) == (2, 0)  # unknown before: 0
    ob.commit(closed_windows(5))
    assert [b.seq for b in ob.pending("a", set(), 10)] == [1]
