"""Runs one uplink: the runtime's half of the uplink contract (gateway/uplinks/base.py).

Per uplink it reads batches above the uplink's cursor from the outbox (events ahead of the
backlog, then windows oldest first), keeps at most `max_in_flight` sends under way, paces a
backlog drain to `max_batches_per_second`, and collects acknowledgements and dead letters that
the next outbox commit applies. When a send fails with `UplinkUnavailable` (or anything
unexpected) sending stops, in-flight sends finish or fail, and after a backoff with jitter (or
the server's Retry-After) `start()` is called again before sending resumes. Each distinct
failure is logged once until the next success, and every failure is counted.

A failure whose `permanent` attribute is true (gateway.mqtt.TlsFileError: a CA, certificate or
key file missing, unreadable or malformed) is not a link problem and retrying cannot mend it:
the runner logs it once as an error, keeps it as `last_error`, sets `stopped`, and sends
nothing more. Batches stay in the outbox (this uplink's cursor does not move) until the file is
fixed and the gateway restarted; the other uplinks go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from gateway.backoff import Backoff
from gateway.batch import Batch
from gateway.errors import BatchRejected
from gateway.logs import LOG_ONCE_MAX
from gateway.metrics import PREFIX, per_kind
from gateway.uplinks.base import Uplink, UplinkContext

__all__ = ["LatencyHistogram", "UplinkMetrics", "UplinkRunner"]

OutboxCall = Callable[..., Awaitable[Any]]


class LatencyHistogram:
    """Cumulative-bucket histogram of seconds (Prometheus semantics), kept by the runner and read
    by its metrics collector: from a batch's making (its windows just closed) to its
    acknowledgement. Buckets span a healthy link (under a second) to an outage of hours."""

    BUCKETS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.total += seconds
        for i, bound in enumerate(self.BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*self.BUCKETS, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class UplinkMetrics:
    """One uplink's figures on `/metrics`, each labelled `uplink=<name>`: what it forwarded, its
    failures and dead letters, whether it is connected, its last error, the acknowledgement
    latency, and the uplink's own counters (under one family and one family per kind). The
    backlog per uplink is the outbox's figure (gateway/status.OutboxProbe)."""

    def __init__(self, runner: UplinkRunner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        r = self.runner
        owner = [r.name]

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(PREFIX + name, text, labels=["uplink"])
            family.add_metric(owner, value)
            return family

        yield counter("uplink_forwarded_batches", "Batches acknowledged", r.forwarded_batches)
        yield counter("uplink_forwarded_records", "Records in acknowledged batches", r.forwarded_records)
        yield counter("uplink_failures", "Failed connects or sends", r.failures)
        yield counter("uplink_dead_lettered", "Batches refused as malformed", r.dead_lettered)
        connected = GaugeMetricFamily(PREFIX + "uplink_connected", "1 while connected", labels=["uplink"])
        connected.add_metric(owner, 1.0 if r.ctx.connected else 0.0)
        yield connected
        events = CounterMetricFamily(PREFIX + "uplink_events", "Uplink-specific counters, all kinds under one name "
                                     "(use edge_gateway_uplink_event_<kind>_total)", labels=["uplink", "counter"])
        for name, n in list(r.ctx.counters.items()):
            events.add_metric([r.name, name], n)
        yield events
        last_error = InfoMetricFamily(PREFIX + "uplink_last_error", "Last failure, until the next success",
                                      labels=["uplink"])
        if r.last_error:
            last_error.add_metric(owner, {"error": r.last_error[:200]})
        yield last_error
        latency = HistogramMetricFamily(PREFIX + "uplink_ack_latency_seconds",
                                        "From a window batch's making (its windows closed) to its acknowledgement",
                                        labels=["uplink"])
        latency.add_metric(owner, r.ack_latency.cumulative(), sum_value=r.ack_latency.total)
        yield latency
        yield from per_kind("uplink_event_", "uplink", r.name, r.ctx.counters, "Uplink events of kind {name}")


class UplinkRunner:
    def __init__(
        self,
        uplink: Uplink[Any],
        ctx: UplinkContext,
        outbox_call: OutboxCall,
        *,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.uplink = uplink
        self.ctx = ctx
        self.name = ctx.name
        self._outbox_call = outbox_call
        self._backoff = backoff
        self._sleep = sleep
        self.max_in_flight = max(1, uplink.config.max_in_flight)
        rate = uplink.config.max_batches_per_second
        self._spacing = 1.0 / rate if rate > 0 else 0.0
        self._next_send = 0.0
        self.wake = asyncio.Event()
        self._inflight: set[int] = set()
        # Batches the outbox must not evict: handed out (the outbox adds them in `pending`),
        # under way, or answered (acknowledged or dead-lettered) until the answer rides a
        # commit. Evicting one of them would count as lost a batch that reached the platform.
        self._held: set[int] = set()
        self._done: set[int] = set()  # acknowledged, not yet committed to the outbox
        self._acks: list[int] = []
        self._dead: list[tuple[str, int, str]] = []
        self._failure: BaseException | None = None
        self._logged_failures: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.log = ctx.log
        # counters read by self.metrics at scrape time
        self.forwarded_batches = 0
        self.ack_latency = LatencyHistogram()
        self.forwarded_records = 0
        self.failures = 0
        self.dead_lettered = 0
        self.last_success = 0.0
        self.last_error = ""  # the last failure's reason until the next success (status page)
        self.stopped = False  # gave up on a permanent failure (see the module docstring)
        self.metrics = UplinkMetrics(self)

    # -- what the tick loop collects ---------------------------------------------------------

    def take_acks(self) -> tuple[list[int], list[tuple[str, int, str]]]:
        acks, dead = self._acks, self._dead
        self._acks, self._dead = [], []
        # the commit these go into applies them before it evicts anything
        self._held.difference_update(acks)
        self._held.difference_update(seq for _, seq, _ in dead)
        return acks, dead

    @property
    def idle(self) -> bool:
        return not self._inflight and not self._acks and not self._dead

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self.uplink.start()
            except Exception as error:  # noqa: BLE001 - every failure is retried, never fatal
                if self._gave_up(error):
                    return
                await self._after_failure(error)
                continue
            self.ctx.connected = True
            try:
                await self._pump()
            except Exception as error:  # noqa: BLE001
                self._failure = error
            self.ctx.connected = False
            if self._failure is not None and not self._stopping:
                failure, self._failure = self._failure, None
                if self._gave_up(failure):
                    return
                await self._after_failure(failure)

    def _gave_up(self, error: BaseException) -> bool:
        if not getattr(error, "permanent", False):
            return False
        self.failures += 1
        self.stopped = True
        self.ctx.connected = False
        self.last_error = str(getattr(error, "reason", None) or error)
        self.log.error("uplink_stopped", reason=self.last_error,
                       note="retrying cannot fix this; batches stay in the outbox until it is fixed and "
                            "the gateway restarted")
        return True

    async def _after_failure(self, error: BaseException) -> None:
        self.failures += 1
        self.ctx.connected = False
        reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
        self.last_error = str(reason)
        # once per reason; a reason can hold a server's error text (a request id), so at most
        # LOG_ONCE_MAX of them until the uplink recovers (the counter and last_error go on)
        if reason not in self._logged_failures and len(self._logged_failures) < LOG_ONCE_MAX:
            self._logged_failures.add(reason)
            self.log.warning(
                "uplink_unavailable",
                note="batches stay in the outbox and are retried",
                reason=reason,
                attempt=self._backoff.attempts + 1,
            )
        delay = self._backoff.next_delay()
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            delay = max(delay, float(retry_after))
        await self._sleep(delay)

    async def _pump(self) -> None:
        while not self._stopping and self._failure is None:
            room = self.max_in_flight - len(self._inflight)
            batches: list[Batch] = []
            if room > 0:
                batches, cursor = await self._outbox_call(self._pending, room)
                self._done = {s for s in self._done if s > cursor}
            for index, batch in enumerate(batches):
                if self._failure is not None or self._stopping:
                    # handed out (and so held by the outbox) but not sent
                    self._held.difference_update(b.seq for b in batches[index:])
                    break
                await self._pace()
                self._inflight.add(batch.seq)
                task = asyncio.create_task(self._send(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if not batches or room <= 0:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                except TimeoutError:
                    pass
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _pending(self, outbox: Any, room: int) -> tuple[list[Batch], int]:
        exclude = self._inflight | self._done
        # the outbox adds what it hands out to self._held itself, on its own thread
        return outbox.pending(self.name, exclude, room, held=self._held), outbox.cursor(self.name)

    async def _pace(self) -> None:
        if not self._spacing:
            return
        now = time.monotonic()
        if self._next_send > now:
            await self._sleep(self._next_send - now)
            now = time.monotonic()
        self._next_send = max(now, self._next_send) + self._spacing

    async def _send(self, batch: Batch) -> None:
        try:
            await self.uplink.send(batch)
        except BatchRejected as error:
            self.dead_lettered += 1
            self._done.add(batch.seq)
            self._dead.append((self.name, batch.seq, error.reason))
            self.log.error(
                "batch_dead_lettered",
                note="the platform refused the batch as malformed; moved to the dead-letter table",
                seq=batch.seq,
                reason=error.reason,
                status=error.status,
            )
        except asyncio.CancelledError:
            self._held.discard(batch.seq)
            raise
        except Exception as error:  # noqa: BLE001 - UplinkUnavailable or anything unexpected
            self._held.discard(batch.seq)  # not delivered: an ordinary stored batch again
            if self._failure is None:
                self._failure = error
            self.wake.set()
        else:
            self._done.add(batch.seq)
            self._acks.append(batch.seq)
            self.forwarded_batches += 1
            self.forwarded_records += batch.records
            self.last_success = time.time()
            if batch.kind == "windows" and batch.created:
                # made when its windows closed: close-to-acknowledged, the platform's freshness
                self.ack_latency.observe(self.last_success - batch.created)
            self.last_error = ""
            if self._backoff.attempts:
                self._backoff.reset()
                self._logged_failures.clear()
                self.log.info("uplink_recovered", note="uplink delivering again")
        finally:
            self._inflight.discard(batch.seq)
            self.wake.set()

    async def stop(self, grace: float) -> None:
        """Stop sending; give in-flight sends `grace` seconds to be acknowledged, then close."""
        self._stopping = True
        self.wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        try:
            await asyncio.wait_for(self.uplink.stop(), timeout=max(0.5, grace))
        except Exception as error:  # noqa: BLE001 - shutting down; log and go on
            self.log.warning("uplink_stop_failed", error=str(error))


