"""The runtime's failed-commit path (gateway/runtime.py `_commit`, `Commit.merge_from`): the
SD card fills while readings flow and batches are being delivered, then frees again.

The full disk is SQLite's own: `PRAGMA max_page_count` set to the database's current size gives
the real SQLITE_FULL error on the outbox's connection, the same as a full file system. While
it lasts every tick's commit fails and is folded into the next: closed windows, an event handed
over during the outage and the acknowledgements of batches delivered during it. Once the disk
frees, one commit stores them all and nothing handed over is missing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.model import Event, Severity
from gateway.runtime import Gateway
from tests.support.batches import read_batches
from tests.support.wait import async_wait_for
from tests.uplinks.gateway_process import write_replay

DEVICES = [f"lora:00000000000001{i:02x}" for i in range(4)]
NO_LIMIT = 1073741823  # SQLite's default max_page_count


def _fill(outbox: Any) -> tuple[int, int]:
    """No page beyond the ones the database has now: the next growth fails as disk full.
    Returns the pages there are and the limit SQLite took (the same if it took it)."""
    pages = int(outbox.db.execute("PRAGMA page_count").fetchone()[0])
    return pages, int(outbox.db.execute(f"PRAGMA max_page_count={pages}").fetchone()[0])


def _free(outbox: Any) -> int:
    return int(outbox.db.execute(f"PRAGMA max_page_count={NO_LIMIT}").fetchone()[0])


def _cursor(outbox: Any) -> int:
    return int(outbox.cursor("file"))


@pytest.mark.slow  # a whole replay in real time through an in-process gateway
async def test_a_disk_that_fills_and_frees_loses_nothing_handed_over(tmp_path: Path) -> None:
    readings = write_replay(tmp_path / "readings.jsonl", DEVICES, steps=300, step_seconds=0.02)
    state = tmp_path / "state"
    output = state / "batches" / "batches.jsonl.gz"
    # The uplink starts blocked (a directory where its file goes), so the first batches stay
    # unacknowledged until the disk is full: their acknowledgements then ride failing commits.
    output.mkdir(parents=True)
    config = parse_config({
        "gateway": {"id": "gw-full", "state_dir": str(state)},
        "windows": {"window": 1, "grace": 0.1, "checkpoint": 0.2},
        "outbox": {"commit_interval": 0.05, "batch_max_records": 4},
        "health": {"listen": ""},
        "runtime": {"restart_backoff_initial": 0.05, "restart_backoff_max": 0.2,
                    "shutdown_timeout": 20},
        "drivers": [{"type": "replay", "path": str(tmp_path / "readings.jsonl")}],
        "uplinks": [{"type": "file", "max_in_flight": 2}],
    })
    gateway = Gateway(config)
    run = asyncio.create_task(gateway.run(drain=True))
    try:
        await async_wait_for(lambda: gateway.outbox.stats.batches_written >= 3, timeout=30,
                             what="batches stored while the uplink is blocked")
        pages, limit = await gateway.outbox_call(_fill)
        await async_wait_for(lambda: gateway.storage_errors >= 3, timeout=30,
                             what="commits failing on the full disk")
        assert gateway.storage_failing
        written_before = gateway.outbox.stats.batches_written
        gateway.submit_event(Event(device="ocpp:CP-9/1", ts=time.time(), name="connector_status",
                                   severity=Severity.ALARM, metric="connector_status",
                                   value="Faulted"))
        # The uplink comes back while the disk is still full: it delivers what is stored...
        output.rmdir()
        runner = gateway.runners[0]
        await async_wait_for(lambda: runner.forwarded_batches == written_before, timeout=30,
                             what="the stored batches delivered during the outage")
        # ...and its acknowledgements wait in the failing commits: none reached the database
        errors = gateway.storage_errors
        await async_wait_for(lambda: runner.idle and gateway.storage_errors >= errors + 2,
                             timeout=30, what="acknowledgements taken into failing commits")
        assert await gateway.outbox_call(_cursor) == 0
        assert gateway.outbox.stats.batches_written == written_before  # nothing committed
        assert gateway.storage_failing
        # The disk frees: one commit stores everything held since it filled.
        await gateway.outbox_call(_free)
        await async_wait_for(lambda: not gateway.storage_failing, timeout=30,
                             what="commits succeed again")
        assert await gateway.outbox_call(_cursor) == written_before  # the merged acks applied
        await async_wait_for(
            lambda: sum(s.ctx.readings for s in gateway.supervisors) == readings, timeout=60,
            what="the whole recording replayed")
    finally:
        gateway.request_stop()
        summary = await asyncio.wait_for(run, timeout=60)
    assert limit == pages  # the disk was full at exactly the size the database had
    assert summary.readings == readings
    assert (summary.late_dropped, summary.future_dropped, summary.evicted_batches) == (0, 0, 0)
    documents = read_batches(output)
    # Delivered once each, one unbroken sequence (two in flight: appended in either order).
    seqs = sorted(doc.seq for doc in documents)
    assert seqs == list(range(1, summary.batches_written + 1))
    assert summary.batches_forwarded == {"file": summary.batches_written}
    assert summary.outbox_batches == 0
    # Every reading handed over is covered by a window record (latest revision of each).
    latest: dict[tuple[str, str, int], tuple[int, int]] = {}
    for doc in documents:
        for record in doc.windows:
            key = (record.device, record.metric, record.start)
            if key not in latest or record.revision > latest[key][0]:
                latest[key] = (record.revision, record.count)
    assert sum(count for _, count in latest.values()) == readings
    assert {device for device, _, _ in latest} == set(DEVICES)
    # The event handed over during the outage arrived, once.
    events = [event for doc in documents for event in doc.events]
    assert [(e.device, e.value) for e in events] == [("ocpp:CP-9/1", "Faulted")]
    # No acknowledgement was lost: a lost one would leave its batch stored and the cursor
    # short of it for good.
    with sqlite3.connect(state / "outbox.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
        assert db.execute("SELECT acked FROM cursors WHERE uplink = 'file'").fetchone()[0] == (
            summary.batches_written)


def _gateway_not_running(tmp_path: Path) -> Gateway:
    """A gateway whose commits a test drives itself, its outbox call replaced."""
    return Gateway(parse_config({"gateway": {"id": "gw-commits", "state_dir": str(tmp_path / "state")},
                                 "health": {"listen": ""}, "uplinks": [{"type": "file"}],
                                 "drivers": [{"type": "replay", "name": "r", "path": str(tmp_path / "none.jsonl")}]}))


async def test_two_commits_at_once_that_both_fail_keep_both(tmp_path: Path) -> None:
    """The tick and a reload (a stopped uplink's acknowledgements) both commit. While the disk
    refuses writes each failed commit is kept to be retried: a second one failing while the
    first is still on the outbox thread must fold the first in, not replace it."""
    from gateway.errors import StorageError
    from gateway.outbox import Commit

    gateway = _gateway_not_running(tmp_path)
    started: list[int] = []
    card = asyncio.Event()

    async def refusing(fn: Any, *args: Any) -> Any:
        started.append(len(started))
        await card.wait()  # on the outbox thread until the test lets the card answer
        raise StorageError("database or disk is full")

    gateway.outbox_call = refusing  # type: ignore[method-assign]
    first = Event(device="d1", name="sensor_status", value="offline", ts=1.0, severity=Severity.WARNING)
    second = Event(device="d2", name="sensor_status", value="offline", ts=2.0, severity=Severity.WARNING)
    commits = asyncio.gather(gateway._commit(Commit(now=1.0, events=[first], acks={"file": [1]})),
                             gateway._commit(Commit(now=2.0, events=[second], acks={"file": [2]})))
    await async_wait_for(lambda: bool(started), timeout=10, what="the first commit on the outbox thread")
    card.set()  # both commits have been started; the card refuses them
    await asyncio.wait_for(commits, timeout=10)
    assert started == [0, 1]
    pending = gateway._pending
    assert pending is not None
    assert pending.events == [first, second] and sorted(pending.acks["file"]) == [1, 2]


async def test_a_tick_cancelled_during_its_commit_does_not_drop_it(tmp_path: Path) -> None:
    """Shutdown gives the last tick `shutdown_timeout`, then cancels it; a commit already on its
    way to the outbox thread (its windows out of the aggregator) must still be stored, and the
    next commit waits for it."""
    from gateway.outbox import Commit, CommitReport

    gateway = _gateway_not_running(tmp_path)
    stored: list[list[Event]] = []
    release = asyncio.Event()

    async def slow_card(fn: Any, commit: Commit) -> Any:
        await release.wait()  # the SD card stalls
        stored.append(commit.events)
        return CommitReport()

    gateway.outbox_call = slow_card  # type: ignore[method-assign]
    first = Event(device="d1", name="sensor_status", value="offline", ts=1.0, severity=Severity.WARNING)
    second = Event(device="d2", name="sensor_status", value="offline", ts=2.0, severity=Severity.WARNING)
    tick = asyncio.create_task(gateway._commit(Commit(now=1.0, events=[first])))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(tick, timeout=0.05)  # what shutdown does when the time is up
    final = asyncio.create_task(gateway._commit(Commit(now=2.0, events=[second])))
    release.set()
    await asyncio.wait_for(final, timeout=10)
    assert stored == [[first], [second]]
