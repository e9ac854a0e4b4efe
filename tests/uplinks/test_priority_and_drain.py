"""In-process gateway (runtime.Gateway) over MQTT: after an outage a fresh priority event goes
ahead of the backlog, and the backlog drains oldest first at the configured rate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.model import Event, Severity
from gateway.runtime import Gateway
from simulators.platform import PlatformReceiver
from tests.support.mosquitto import Broker
from tests.support.wait import async_wait_for
from tests.uplinks.gateway_process import write_replay

# slow: end to end over a broker outage (make test-fast leaves it out)
pytestmark = pytest.mark.slow

RATE = 20.0  # max_batches_per_second


def _stored(kind: str):  # type: ignore[no-untyped-def]
    def count(outbox) -> int:  # type: ignore[no-untyped-def]
        row = outbox.db.execute("SELECT COUNT(*) FROM batches WHERE kind = ?", (kind,)).fetchone()
        return int(row[0])
    return count


def _windows_above(seq: int):  # type: ignore[no-untyped-def]
    def count(outbox) -> int:  # type: ignore[no-untyped-def]
        row = outbox.db.execute("SELECT COUNT(*) FROM batches WHERE kind = 'windows' AND seq > ?", (seq,)).fetchone()
        return int(row[0])
    return count


def _highest_seq(outbox) -> int:  # type: ignore[no-untyped-def]
    return int(outbox.db.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()[0])


async def test_event_goes_ahead_of_backlog_drained_oldest_first_at_rate(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(workdir=tmp_path / "broker").start()
    receiver = PlatformReceiver(broker.host, broker.port)
    await receiver.start()
    write_replay(tmp_path / "readings.jsonl", [f"lora:00000000000000{i:02x}" for i in range(4)],
                 steps=50, step_seconds=0.05)
    config = parse_config({
        "gateway": {"id": "gw-prio", "state_dir": str(tmp_path / "state")},
        "windows": {"window": 1, "grace": 0.2},
        "outbox": {"batch_max_records": 2, "commit_interval": 0.1},
        "health": {"listen": ""},
        "runtime": {"restart_backoff_initial": 0.2, "restart_backoff_max": 0.5},
        "drivers": [{"type": "replay", "path": str(tmp_path / "readings.jsonl")}],
        "uplinks": [{"type": "mqtt", "host": broker.host, "port": broker.port,
                     "require_subscriber": True, "max_batches_per_second": RATE,
                     "connect_timeout": 2.0}],
    })
    gateway = Gateway(config)
    run = asyncio.create_task(gateway.run())
    try:
        await async_wait_for(lambda: receiver.report()["batches"] >= 1, timeout=20)
        await asyncio.to_thread(broker.stop)
        # batches up to here may have been handed to the MQTT client before the broker went:
        # it sends those again first on reconnect, ahead of anything the runner sends then
        maybe_in_flight = await gateway.outbox_call(_highest_seq)
        await async_wait_for(lambda: gateway.outbox_call(_stored("windows")), timeout=20)
        await async_wait_for(lambda: (lambda n: n >= 8)(gateway.outbox.stats.batches), timeout=20,
                             what="a backlog of window batches")

        async def four_stored_in_the_outage() -> bool:
            return int(await gateway.outbox_call(_windows_above(maybe_in_flight))) >= 4

        await async_wait_for(four_stored_in_the_outage, timeout=20,
                             what="four window batches stored since the broker went")
        gateway.submit_event(Event(device="ocpp:CP-7/1", ts=time.time(), name="connector_status",
                                   severity=Severity.ALARM, metric="connector_status",
                                   value="Faulted"))
        await async_wait_for(lambda: gateway.outbox_call(_stored("events")), timeout=10,
                             what="the event stored")
        backlog = gateway.outbox.stats.batches
        newest = await gateway.outbox_call(_highest_seq)  # the event's seq, or a later window's
        arrived_before = len(receiver.ledger.arrivals)
        await asyncio.to_thread(broker.restart)
        # arrivals may repeat a batch (QoS 1 sends an unacknowledged one again): wait on the seqs
        await async_wait_for(lambda: receiver.report()["events"] == 1
                             and len(receiver.ledger.arrivals) - arrived_before >= backlog
                             and {seq for _, seq, _ in receiver.ledger.arrivals[arrived_before:]}
                             >= set(range(maybe_in_flight + 1, newest + 1)),
                             timeout=30, what="event and backlog delivered")
    finally:
        gateway.request_stop()
        await run
        await receiver.stop()
        await asyncio.to_thread(broker.stop)
    after = receiver.ledger.arrivals[arrived_before:]
    times = receiver.arrival_times[arrived_before:]
    # The event overtook every window batch stored during the outage.
    event_at = next(i for i, (_, _, is_event) in enumerate(after) if is_event)
    assert all(seq <= maybe_in_flight for _, seq, _ in after[:event_at]), (maybe_in_flight, after[:event_at + 1])
    # every window batch stored during the outage ahead of the event arrived after it
    event_seq = after[event_at][1]
    overtaken = sorted({seq for _, seq, is_event in after[event_at + 1:] if not is_event and seq > maybe_in_flight
                        and seq < event_seq})
    assert overtaken == list(range(maybe_in_flight + 1, event_seq))
    # a lower bound (waited for above): how many the outage stored before the event is the clock's
    assert len(overtaken) >= 4
    windows = [seq for _, seq, is_event in after[:backlog] if not is_event]
    assert windows == sorted(windows)  # oldest first
    # Drained at no more than RATE batches a second (10 % slack for timer granularity).
    span = times[backlog - 1] - times[0]
    assert span >= (backlog - 1) / RATE * 0.9, (span, backlog)
