"""The runtime in-process: supervision, the tick, metrics, systemd notifications."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import registry
from gateway.backoff import Backoff
from gateway.cli import main as cli_main
from gateway.config import parse_config
from gateway.health import fetch_status
from gateway.outbox import Outbox
from gateway.runtime import Gateway
from gateway.systemd import Notifier
from tests.support.batches import read_batches
from tests.support.ports import free_port
from tests.support.wait import async_holds, async_wait_for


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.gateway import flaky_driver

    monkeypatch.setitem(registry.DRIVER_PACKAGES, "flaky", "tests.gateway.flaky_driver")
    flaky_driver.FlakyDriver.runs = 0


def config(tmp_path: Path, **extra: Any) -> Any:
    raw = {
        "gateway": {"id": "gw-test", "state_dir": str(tmp_path / "state")},
        "windows": {"window": 1, "grace": 0.1, "checkpoint": 0.2},
        "outbox": {"commit_interval": 0.05},
        "runtime": {"restart_backoff_initial": 0.01, "restart_backoff_max": 0.05, "shutdown_timeout": 5},
        "health": {"listen": extra.pop("listen", "")},
        "drivers": [{"type": "flaky", "name": "flaky"}],
    }
    raw.update(extra)
    return parse_config(raw)


def test_backoff_grows_with_jitter_and_resets() -> None:
    import random

    b = Backoff(1.0, 8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert len(set(delays)) == len(delays), "jittered"
    b.reset()
    assert b.next_delay() <= 1.0


async def test_failing_driver_is_restarted_and_its_readings_reach_the_outbox(tmp_path: Path, flaky: None) -> None:
    gateway = Gateway(config(tmp_path))
    task = asyncio.create_task(gateway.run(duration=30, drain=True))
    await async_wait_for(lambda: gateway.supervisors and gateway.supervisors[0].ctx.readings == 5, timeout=10)
    assert gateway.supervisors[0].restarts == 2
    await async_wait_for(lambda: gateway.runners[0].forwarded_batches >= 1, timeout=10, what="event batch forwarded")
    gateway.request_stop()
    summary = await asyncio.wait_for(task, timeout=15)
    # the five readings share one timestamp, device and metric: one window, closed by the drain
    assert summary.readings == 5 and summary.windows_closed == 1
    # one batch for the event, one for the window: both written and both forwarded
    assert (summary.batches_written, summary.batches_forwarded) == (2, {"file": 2})
    documents = read_batches(tmp_path / "state" / "batches" / "batches.jsonl.gz")
    assert [e.name for d in documents for e in d.events] == ["sensor_alarm"]
    assert sum(r.count for d in documents for r in d.windows if r.metric == "temperature") == 5


async def test_metrics_endpoint_and_status_command(tmp_path: Path, flaky: None, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    gateway = Gateway(config(tmp_path, listen=f"127.0.0.1:{port}"))
    task = asyncio.create_task(gateway.run(duration=30))
    await async_wait_for(lambda: gateway.supervisors and gateway.supervisors[0].ctx.readings == 5, timeout=10)
    url = f"http://127.0.0.1:{port}/metrics"
    status = await asyncio.to_thread(fetch_status, url)
    assert status["readings"] == [({"driver": "flaky"}, 5.0)]
    assert status["driver_restarts"] == [({"driver": "flaky"}, 2.0)]
    for name in ("windows_closed", "late_dropped", "outbox_batches", "outbox_bytes", "outbox_evicted_batches",
                 "uplink_forwarded_batches", "driver_last_seen_timestamp_seconds", "decode_errors"):
        assert name in status or name == "decode_errors", name
    # the window batch's close-to-acknowledged latency (the file uplink acknowledges at once)
    # the readings share one window: one window batch, and nothing more to close after it
    await async_wait_for(lambda: gateway.runners[0].ack_latency.cumulative()[-1][1] == 1, timeout=10,
                         what="the window batch acknowledged")
    status = await asyncio.to_thread(fetch_status, url)
    counts = {labels["le"]: value for labels, value in status["uplink_ack_latency_seconds_bucket"]}
    assert counts["+Inf"] == gateway.runners[0].ack_latency.cumulative()[-1][1] == 1
    assert counts["5.0"] == counts["+Inf"]  # acknowledged within seconds of its making
    code = await asyncio.to_thread(cli_main, ["status", "--url", url])
    out = capsys.readouterr().out
    assert re.search(r"^flaky\s+\S+\s+1\s+5\s", out, re.M), out  # 1 device, 5 readings
    assert code == {"OK": 0, "DEGRADED": 1, "UNHEALTHY": 2}[re.search(r"verdict: (\w+)", out)[1]]  # type: ignore[index]
    gateway.request_stop()
    await asyncio.wait_for(task, timeout=15)


async def test_ready_then_watchdog_only_while_ticks_complete(tmp_path: Path, flaky: None) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.setblocking(False)
    received: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                received.extend(sock.recv(4096).decode().splitlines())
            except BlockingIOError:
                return received

    gateway = Gateway(config(tmp_path), notifier=Notifier(path, "400000"))
    task = asyncio.create_task(gateway.run(duration=30))
    await async_wait_for(lambda: "READY=1" in drain(), timeout=10, what="READY=1")
    await async_wait_for(lambda: drain().count("WATCHDOG=1") >= 2, timeout=10, what="WATCHDOG=1")
    # stall the outbox thread (an SD card that stopped answering): watchdog pings must stop
    stall = threading.Event()
    entered = threading.Event()
    original = Outbox.commit

    def stuck(self: Outbox, commit: Any) -> Any:
        entered.set()
        stall.wait(10)
        return original(self, commit)

    Outbox.commit = stuck  # type: ignore[method-assign]
    try:
        await async_wait_for(entered.is_set, timeout=10, what="a tick stuck in the outbox thread")
        # a ping may still go out up to one watchdog interval (0.4 s) after the last completed
        # tick, plus one ping period (0.2 s); from then on there must be none
        await async_wait_for(lambda: time.time() - gateway.last_tick > 0.6, timeout=10,
                             what="one watchdog interval since the last completed tick")
        drain()
        received.clear()
        # for 2.5 watchdog intervals, not one ping
        await async_holds(lambda: "WATCHDOG=1" not in drain(), 1.0, what="no WATCHDOG=1 while the tick is stuck")
    finally:
        Outbox.commit = original  # type: ignore[method-assign]
        stall.set()
    await async_wait_for(lambda: "WATCHDOG=1" in drain(), timeout=10, what="watchdog resumes")
    gateway.request_stop()
    await asyncio.wait_for(task, timeout=15)
    assert "STOPPING=1" in drain()
    sock.close()


async def test_clock_steps_are_counted_without_reopening_windows(tmp_path: Path, flaky: None) -> None:
    import time as _time

    offset = [0.0]
    gateway = Gateway(config(tmp_path), clock=lambda: _time.time() + offset[0])
    task = asyncio.create_task(gateway.run(duration=30))
    await async_wait_for(lambda: gateway.supervisors and gateway.supervisors[0].ctx.readings == 5, timeout=10)
    await async_wait_for(lambda: gateway.last_tick > 0, timeout=10)
    boundary = gateway.aggregator.closed_before
    offset[0] = 20.0  # NTP steps the clock 20 s forward
    await async_wait_for(lambda: gateway.clock_jumps == 1, timeout=10, what="forward step counted")
    offset[0] = -600.0  # and ten minutes back
    await async_wait_for(lambda: gateway.clock_jumps == 2, timeout=10, what="backward step counted")
    assert gateway.aggregator.closed_before >= boundary, "a step back never reopens windows"
    gateway.request_stop()
    await asyncio.wait_for(task, timeout=15)


def test_latency_histogram_is_cumulative_with_an_infinite_bucket() -> None:
    from gateway.uplinks.runner import LatencyHistogram

    histogram = LatencyHistogram()
    for seconds in (0.1, 0.3, 7.0, 99_999.0, -1.0):  # a clock step back counts as 0
        histogram.observe(seconds)
    buckets = dict(histogram.cumulative())
    assert (buckets["0.25"], buckets["0.5"], buckets["10.0"], buckets["14400.0"], buckets["+Inf"]) == (2, 3, 4, 4, 5)
    assert histogram.total == 0.1 + 0.3 + 7.0 + 99_999.0
