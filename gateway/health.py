"""Counters for every stage, exposed as Prometheus `/metrics` and printed by `edge-gateway status`.

The pipeline counts in plain integers (no locks on the per-reading path); this collector reads
them when Prometheus scrapes. Metric names are `edge_gateway_*`.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["HealthCollector", "HealthServer", "fetch_status", "format_status"]

P = "edge_gateway_"


class HealthCollector:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Any]:
        g = self.gateway
        w = g.aggregator.stats
        o = g.outbox.stats

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(P + name, text, value=value)

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(P + name, text, value=value)

        readings = CounterMetricFamily(P + "readings", "Readings received from drivers", labels=["driver"])
        errors = CounterMetricFamily(P + "decode_errors", "Bad field data, by cause", labels=["driver", "cause"])
        dev = CounterMetricFamily(P + "driver_events", "Driver-specific counters", labels=["driver", "counter"])
        restarts = CounterMetricFamily(P + "driver_restarts", "Driver restarts after a failure", labels=["driver"])
        seen = GaugeMetricFamily(P + "driver_last_seen_timestamp_seconds", "Last reading per driver (Unix s)", labels=["driver"])
        up = GaugeMetricFamily(P + "driver_up", "1 while the driver runs, 0 while it waits to restart", labels=["driver"])
        for sup in g.supervisors:
            ctx = sup.ctx
            readings.add_metric([ctx.name], ctx.readings)
            for cause, n in list(ctx.decode_errors.items()):
                errors.add_metric([ctx.name, cause], n)
            for name, n in list(ctx.counters.items()):
                dev.add_metric([ctx.name, name], n)
            restarts.add_metric([ctx.name], sup.restarts)
            seen.add_metric([ctx.name], ctx.last_seen)
            up.add_metric([ctx.name], 1.0 if sup.running else 0.0)
        yield from (readings, errors, dev, restarts, seen, up)

        yield counter("events", "Priority events forwarded", g.events_in)
        yield counter("windows_closed", "Windows closed (first revision)", w.closed)
        yield counter("windows_revised", "Revisions of closed windows from late readings", o.revisions)
        yield counter("late_accepted", "Readings for closed windows within max_lateness", w.late_accepted)
        yield counter("late_dropped", "Readings older than max_lateness, dropped", w.late_dropped)
        yield counter("future_dropped", "Readings too far ahead of the gateway clock, dropped", w.future_dropped)
        yield counter("unknown_metric_dropped", "Readings of metrics outside the catalog", w.unknown_metric)
        yield gauge("open_series", "Open window accumulators", g.aggregator.open_series)
        yield counter("clock_jumps", "Wall-clock steps larger than a tick (NTP sync)", g.clock_jumps)

        yield gauge("outbox_batches", "Batches stored in the outbox", o.batches)
        yield gauge("outbox_bytes", "Payload bytes stored in the outbox", o.bytes)
        yield gauge("outbox_max_bytes", "Configured outbox bound", g.outbox.max_bytes)
        yield counter("outbox_commits", "Grouped commits", o.commits)
        yield counter("outbox_bytes_written", "Batch payload bytes committed", o.bytes_committed)
        yield counter("outbox_records_written", "Window records committed", o.records_written)
        yield counter("outbox_evicted_batches", "Batches evicted because the outbox was full", o.evicted_batches)
        yield counter("outbox_evicted_records", "Window records in evicted batches", o.evicted_records)
        yield counter("outbox_dead_letters", "Batches moved to the dead-letter table", o.dead_letters)
        yield counter("outbox_write_errors", "Failed commits (disk full, I/O error)", g.storage_errors)

        fwd_b = CounterMetricFamily(P + "uplink_forwarded_batches", "Batches acknowledged", labels=["uplink"])
        fwd_r = CounterMetricFamily(P + "uplink_forwarded_records", "Records in acknowledged batches", labels=["uplink"])
        fail = CounterMetricFamily(P + "uplink_failures", "Failed connects or sends", labels=["uplink"])
        dead = CounterMetricFamily(P + "uplink_dead_lettered", "Batches refused as malformed", labels=["uplink"])
        conn = GaugeMetricFamily(P + "uplink_connected", "1 while connected", labels=["uplink"])
        ucnt = CounterMetricFamily(P + "uplink_events", "Uplink-specific counters", labels=["uplink", "counter"])
        for r in g.runners:
            fwd_b.add_metric([r.name], r.forwarded_batches)
            fwd_r.add_metric([r.name], r.forwarded_records)
            fail.add_metric([r.name], r.failures)
            dead.add_metric([r.name], r.dead_lettered)
            conn.add_metric([r.name], 1.0 if r.ctx.connected else 0.0)
            for name, n in list(r.ctx.counters.items()):
                ucnt.add_metric([r.name, name], n)
        yield from (fwd_b, fwd_r, fail, dead, conn, ucnt)


class HealthServer:
    """Prometheus exposition on a local address (its own thread, off the event loop)."""

    def __init__(self, gateway: Gateway, listen: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HealthCollector(gateway))  # type: ignore[arg-type]
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> None:
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as error:
            raise OSError(f"health.listen {self.host}:{self.port}: cannot serve /metrics ({error.strerror or error})") from error
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def fetch_status(url: str, timeout: float = 3.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local URL
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(P) and not sample.name.endswith("_created"):
                out.setdefault(sample.name.removeprefix(P).removesuffix("_total"), []).append(
                    (dict(sample.labels), sample.value)
                )
    return out


def format_status(status: dict[str, list[tuple[dict[str, str], float]]]) -> str:
    lines = []
    for name in sorted(status):
        for labels, value in status[name]:
            label = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"
            lines.append(f"  {name + ('{' + label + '}' if label else ''):<60} {shown:>16}")
    return "\n".join(lines)
