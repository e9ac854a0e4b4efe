"""`edge-gateway test`: run the configured drivers alone and print what they decode.

A technician wiring a new sensor wants to see its readings now, one per line, not a window a
minute later on the platform. This runs the drivers of a config (or one of them) with their
real transports but without windows, outbox or uplinks, prints each reading as it arrives
(event time, device, metric, value, unit) and each priority event, and at the end the counts of
what was dropped and why: the drivers' decode errors per cause, plus readings the windows would
refuse (a metric outside the catalog, an event time too far ahead or too old).

The drivers get a scratch copy of their state folder (LoRaWAN sessions and frame counters), so
a test run beside the live gateway never rewrites the live state.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.config import Config
from gateway.driver import DriverContext
from gateway.model import CATALOG, Event, Reading
from gateway.registry import load_driver
from gateway.windows import FUTURE_TOLERANCE

__all__ = ["TestReport", "run_test"]


@dataclass
class TestReport:
    readings: Counter[str] = field(default_factory=Counter)  # per driver
    events: int = 0
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (driver, cause)
    failed: dict[str, str] = field(default_factory=dict)  # driver -> why it stopped

    def render(self) -> str:
        lines = ["", "readings per driver:"]
        lines += [f"  {name:<20} {n:>8}" for name, n in sorted(self.readings.items())] or ["  none"]
        lines.append(f"priority events: {self.events}")
        lines.append("dropped, by cause:")
        lines += [f"  {d:<20} {c:<28} {n:>8}" for (d, c), n in sorted(self.dropped.items())] or ["  none"]
        for name, why in self.failed.items():
            lines.append(f"driver {name} stopped: {why}")
        return "\n".join(lines)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _value(value: float | str) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class _Sink:
    """Stands in for the windows: prints a reading, or counts why the windows would drop it."""

    def __init__(self, name: str, config: Config, report: TestReport, out: TextIO,
                 clock: Callable[[], float], on_reading: Callable[[], bool]) -> None:
        self.name = name
        self.report = report
        self.out = out
        self.clock = clock
        self.on_reading = on_reading
        w = config.windows
        self.oldest = w.window + w.grace + w.max_lateness

    def reading(self, reading: Reading) -> None:
        if self.on_reading():
            return  # --count reached: the rest of a frame's readings are not shown
        row = CATALOG.get(reading.metric)
        now = self.clock()
        if row is None:
            cause = "metric_not_in_catalog"
        elif reading.ts > now + FUTURE_TOLERANCE:
            cause = "event_time_in_future"
        elif reading.ts < now - self.oldest:
            cause = "event_time_too_old"
        else:
            self.report.readings[self.name] += 1
            print(f"{_when(reading.ts)}  {reading.device:<28} {reading.metric:<24} "
                  f"{_value(reading.value):>12} {row.unit}", file=self.out, flush=True)
            return
        self.report.dropped[(self.name, cause)] += 1
        print(f"{_when(reading.ts)}  {reading.device:<28} {reading.metric:<24} "
              f"{_value(reading.value):>12}   dropped: {cause}", file=self.out, flush=True)

    def event(self, event: Event) -> None:
        self.report.events += 1
        value = "" if event.value is None else f" {event.metric}={_value(event.value)}"
        print(f"{_when(event.ts)}  {event.device:<28} EVENT {event.name} ({event.severity}){value}",
              file=self.out, flush=True)


async def run_test(
    config: Config,
    *,
    driver: str | None = None,
    seconds: float = 30.0,
    count: int = 0,
    out: TextIO,
) -> TestReport:
    """Run the drivers for `seconds` (or until `count` readings, or until they all end)."""
    settings = [d for d in config.drivers if driver is None or d.name == driver]
    if not settings:
        names = ", ".join(d.name for d in config.drivers)
        raise LookupError(f"no driver named {driver!r} in {config.source} (there are: {names})")
    report = TestReport()
    done = asyncio.Event()

    def counted() -> bool:
        """True once `count` readings were shown (and the run is told to end)."""
        if count and sum(report.readings.values()) >= count:
            done.set()
            return True
        return False

    scratch = Path(tempfile.mkdtemp(prefix="edge-gateway-test-"))
    contexts: list[DriverContext] = []
    tasks: dict[str, asyncio.Future[Any]] = {}
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)
    try:
        for item in settings:
            live = config.state_path / "drivers" / item.name
            state = scratch / item.name
            if live.is_dir():
                shutil.copytree(live, state)
            sink = _Sink(item.name, config, report, out, time.time, counted)
            ctx = DriverContext(item.name, gateway_id=config.gateway.id, state_dir=state,
                                submit=sink.reading, submit_event=sink.event)
            contexts.append(ctx)
            instance = load_driver(item.type)(item, ctx)
            tasks[item.name] = asyncio.create_task(_run_once(instance, item.name, report))
        waiter = asyncio.create_task(done.wait())
        all_ended: asyncio.Future[Any] = asyncio.gather(*tasks.values())
        await asyncio.wait([waiter, all_ended], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        with contextlib.suppress(BaseException):
            await all_ended
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        shutil.rmtree(scratch, ignore_errors=True)
    for ctx in contexts:
        for cause, n in ctx.decode_errors.items():
            report.dropped[(ctx.name, cause)] += n
    return report


async def _run_once(instance: Any, name: str, report: TestReport) -> None:
    try:
        await instance.run()
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - shown to the technician, not retried
        report.failed[name] = f"{type(error).__name__}: {error}"
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(instance.close(), timeout=5)
