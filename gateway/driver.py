"""The contract between the runtime and a driver.

A driver turns bytes from one hardware interface into `Reading`s and hands them to its
`DriverContext`; everything shared (windowing, counters, restart with backoff, logging once per
cause) lives in the runtime. A driver's `run()` runs until cancelled; if it raises, the runtime
restarts it after an exponential backoff with jitter, so a flaky USB adapter never takes the
process down.

A driver package `drivers/<type>/` exposes, without importing anything heavy:

    Config        a msgspec Struct subclassing `DriverSettings` (its config keys)
    load_driver() returns the Driver subclass (imports bleak, pyserial, ... only then)
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.errors import DecodeError
from gateway.metrics import PREFIX, per_kind
from gateway.model import Event, Reading

__all__ = ["Driver", "DriverContext", "DriverMetrics", "DriverSettings"]

_INF = float("inf")


class DriverSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Keys every `[[drivers]]` table has. Driver configs subclass this."""

    type: str
    # Unique per gateway; defaults to the type. Names the driver in logs, metrics and state.
    name: str = ""


ConfigT = TypeVar("ConfigT", bound=DriverSettings)


# Distinct devices a driver's status counts at most (a flood of made-up ids cannot grow memory).
MAX_DEVICES_TRACKED = 100_000


class DriverContext:
    """What a running driver may touch: the reading sink, counters, its state folder, a clock.

    Counters are plain integers that its `metrics` collector reads at scrape time, so counting
    costs no lock on the per-reading path.
    """

    def __init__(
        self,
        name: str,
        *,
        gateway_id: str,
        state_dir: Path,
        submit: Callable[[Reading], None],
        submit_event: Callable[[Event], None],
        clock: Callable[[], float] = time.time,
        logger: Any | None = None,
    ) -> None:
        self.name = name
        self.gateway_id = gateway_id
        self.state_dir = state_dir
        self.clock = clock
        self.log = logger if logger is not None else structlog.get_logger("driver").bind(driver=name)
        self._submit = submit
        self._submit_event = submit_event
        self.readings = 0
        self.events = 0
        self.last_seen = 0.0
        self.decode_errors: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self._logged_causes: set[str] = set()
        # devices heard since start (the status views show how many), bounded
        self.devices: set[str] = set()
        self.metrics = DriverMetrics(self)

    def emit(self, reading: Reading) -> None:
        """Hand one reading to the windows. Must be called on the event loop thread.

        A NaN or infinite value (a sensor's error sentinel a decoder missed) would poison a
        window's min/max/mean: it is refused here, counted and logged once."""
        value = reading.value
        if value.__class__ is float and not -_INF < value < _INF:  # type: ignore[operator]
            self.decode_error("non_finite_value", f"{reading.metric}={value!r}", device=reading.device)
            return
        self.readings += 1
        self.last_seen = self.clock()
        if len(self.devices) < MAX_DEVICES_TRACKED:
            self.devices.add(reading.device)
        self._submit(reading)

    def emit_many(self, readings: Iterable[Reading]) -> None:
        submit = self._submit
        n = 0
        for reading in readings:
            value = reading.value
            if value.__class__ is float and not -_INF < value < _INF:  # type: ignore[operator]
                self.decode_error("non_finite_value", f"{reading.metric}={value!r}", device=reading.device)
                continue
            submit(reading)
            n += 1
            if len(self.devices) < MAX_DEVICES_TRACKED:
                self.devices.add(reading.device)
        if n:
            self.readings += n
            self.last_seen = self.clock()

    def event(self, event: Event) -> None:
        """Forward a priority event at once (it should also be emitted as a reading)."""
        self.events += 1
        self._submit_event(event)

    def decode_error(self, error: DecodeError | str, detail: str = "", **fields: Any) -> None:
        """Count bad field data and log it once per cause, never once per frame."""
        if isinstance(error, DecodeError):
            cause, detail = error.cause, detail or error.detail
            if error.device and "device" not in fields:
                fields["device"] = error.device
        else:
            cause = error
        self.decode_errors[cause] = self.decode_errors.get(cause, 0) + 1
        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            self.log.warning(
                "decode_error",
                cause=cause,
                detail=detail,
                note="logged once per cause, counted in decode_errors_total",
                **fields,
            )

    def count(self, counter: str, n: int = 1) -> None:
        """A driver-specific counter, exported as `driver_events_total{driver,counter}`."""
        self.counters[counter] = self.counters.get(counter, 0) + n

    def state_write_failed(self, path: object, error: OSError, note: str = "") -> None:
        """A driver's own state file the disk refused (full, read-only): counted every time,
        logged once per errno; the driver keeps the state and writes it again later."""
        self.count("state_write_failed")
        cause = f"state_write_failed:{error.errno}"
        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            self.log.warning("state_write_failed", path=str(path), reason=str(error),
                             note=note or "kept in memory and written again later")


class DriverMetrics:
    """A driver's figures on `/metrics`, each labelled `driver=<name>`: readings, decode errors by
    cause, its own counters (under one family and one family per kind), when it last delivered a
    reading, how many devices it heard. Read from the context's integers at scrape time."""

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        owner = [ctx.name]
        readings = CounterMetricFamily(PREFIX + "readings", "Readings received from drivers", labels=["driver"])
        readings.add_metric(owner, ctx.readings)
        errors = CounterMetricFamily(PREFIX + "decode_errors", "Bad field data, by cause", labels=["driver", "cause"])
        for cause, n in list(ctx.decode_errors.items()):
            errors.add_metric([ctx.name, cause], n)
        events = CounterMetricFamily(PREFIX + "driver_events", "Driver-specific counters, all kinds under one name "
                                     "(kept for old readers; use edge_gateway_driver_event_<kind>_total)",
                                     labels=["driver", "counter"])
        for name, n in list(ctx.counters.items()):
            events.add_metric([ctx.name, name], n)
        seen = GaugeMetricFamily(PREFIX + "driver_last_seen_timestamp_seconds", "Last reading per driver (Unix s)",
                                 labels=["driver"])
        seen.add_metric(owner, ctx.last_seen)
        devices = GaugeMetricFamily(PREFIX + "driver_devices", "Distinct devices heard since start", labels=["driver"])
        devices.add_metric(owner, len(ctx.devices))
        yield from (readings, errors, events, seen, devices)
        yield from per_kind("driver_event_", "driver", ctx.name, ctx.counters, "Driver events of kind {name}")


class Driver(abc.ABC, Generic[ConfigT]):
    """Base class of every driver; see the module docstring for the contract."""

    type_name: ClassVar[str] = ""

    def __init__(self, config: ConfigT, ctx: DriverContext) -> None:
        self.config = config
        self.ctx = ctx

    @abc.abstractmethod
    async def run(self) -> None:
        """Read the interface until cancelled. Raise to be restarted with backoff."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release transports; called after `run` ends, also on shutdown."""
