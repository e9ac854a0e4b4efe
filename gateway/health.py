"""Counters for every stage, exposed as Prometheus `/metrics`, and the health listener.

The pipeline counts in plain integers (no locks on the per-reading path); this collector reads
them when Prometheus scrapes. Metric names are `edge_gateway_*`; a driver's or uplink's own
counters become one metric per kind (`edge_gateway_driver_event_<name>_total{driver}`), so a
`sum()` over one of them means something.

The listener (loopback by default) serves `/metrics`, `/healthz` (200, or 503 with the reasons
when unhealthy), `/status.json` and `/`, the status page (gateway/status.py); any other path is a
404. It runs on its own thread, off the event loop.
"""

from __future__ import annotations

import json
import platform
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.status import OutboxProbe, render_html, snapshot

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["HealthCollector", "HealthServer", "StatusBoard", "fetch_status", "format_status"]

P = "edge_gateway_"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _per_kind(
    prefix: str, label: str, rows: list[tuple[str, dict[str, int]]], text: str
) -> Iterator[CounterMetricFamily]:
    """One counter family per counter name: `<prefix><name>_total{<label>}`."""
    families: dict[str, CounterMetricFamily] = {}
    for owner, counters in rows:
        for name, value in list(counters.items()):
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(
                    P + prefix + _UNSAFE.sub("_", name), text.format(name=name), labels=[label]
                )
            family.add_metric([owner], value)
    yield from families.values()


class HealthCollector:
    def __init__(self, gateway: Gateway, probe: OutboxProbe | None = None) -> None:
        self.gateway = gateway
        self.probe = probe
        self.started = time.time()

    def collect(self) -> Iterator[Any]:
        g = self.gateway
        w = g.aggregator.stats
        o = g.outbox.stats
        build = InfoMetricFamily(P + "build", "Version of the running gateway")
        build.add_metric([], {"version": __version__, "gateway": g.config.gateway.id,
                              "python": platform.python_version()})
        yield build
        yield GaugeMetricFamily(P + "start_time_seconds", "Start of this process (Unix s)", value=self.started)
        yield GaugeMetricFamily(P + "last_tick_timestamp_seconds", "Last completed outbox commit tick (Unix s)",
                                value=g.last_tick)
        yield GaugeMetricFamily(P + "outbox_storage_failing", "1 while outbox commits fail and are retried",
                                value=1.0 if g.storage_failing else 0.0)

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(P + name, text, value=value)

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(P + name, text, value=value)

        readings = CounterMetricFamily(P + "readings", "Readings received from drivers", labels=["driver"])
        errors = CounterMetricFamily(P + "decode_errors", "Bad field data, by cause", labels=["driver", "cause"])
        dev = CounterMetricFamily(P + "driver_events", "Driver-specific counters, all kinds under one name "
                                  "(kept for old readers; use edge_gateway_driver_event_<kind>_total)",
                                  labels=["driver", "counter"])
        restarts = CounterMetricFamily(P + "driver_restarts", "Driver restarts after a failure", labels=["driver"])
        seen = GaugeMetricFamily(P + "driver_last_seen_timestamp_seconds", "Last reading per driver (Unix s)", labels=["driver"])
        up = GaugeMetricFamily(P + "driver_up", "1 while the driver runs, 0 while it waits to restart", labels=["driver"])
        devices = GaugeMetricFamily(P + "driver_devices", "Distinct devices heard since start", labels=["driver"])
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
            devices.add_metric([ctx.name], len(ctx.devices))
        yield from (readings, errors, dev, restarts, seen, up, devices)
        yield from _per_kind("driver_event_", "driver", [(sup.ctx.name, sup.ctx.counters) for sup in g.supervisors],
                             "Driver events of kind {name}")

        yield counter("events", "Priority events forwarded", g.events_in)
        yield counter("windows_closed", "Windows closed (first revision)", w.closed)
        yield counter("windows_revised", "Revisions of closed windows from late readings", o.revisions)
        yield counter("late_accepted", "Readings for closed windows within max_lateness", w.late_accepted)
        yield counter("late_dropped", "Readings older than max_lateness, dropped", w.late_dropped)
        yield counter("future_dropped", "Readings too far ahead of the gateway clock, dropped", w.future_dropped)
        yield counter("unknown_metric_dropped", "Readings of metrics outside the catalog", w.unknown_metric)
        yield gauge("open_series", "Open window accumulators", g.aggregator.open_series)
        yield counter("clock_jumps", "Wall-clock steps larger than a tick (NTP sync)", g.clock_jumps)
        yield counter("time_gaps", "Gaps in the gateway's own time (downtime, clock steps forward) "
                      "that ended the carried states", g.time_gaps)
        yield counter("held_records_dropped", "Closed windows and events dropped from memory while "
                      "the disk refused writes for too long", g.held_records_dropped)

        yield gauge("outbox_batches", "Batches stored in the outbox", o.batches)
        yield gauge("outbox_bytes", "Payload bytes stored in the outbox", o.bytes)
        yield gauge("outbox_max_bytes", "Configured outbox bound", g.outbox.max_bytes)
        yield counter("outbox_commits", "Grouped commits", o.commits)
        yield counter("outbox_bytes_written", "Batch payload bytes committed", o.bytes_committed)
        yield counter("outbox_records_written", "Window records committed", o.records_written)
        yield counter("outbox_evicted_batches", "Batches evicted because the outbox was full", o.evicted_batches)
        yield counter("outbox_evicted_records", "Window records in evicted batches", o.evicted_records)
        yield counter("outbox_evicted_readings", "Readings covered by the window records and events of evicted batches",
                      o.evicted_readings)
        yield counter("outbox_dead_letters", "Batches moved to the dead-letter table", o.dead_letters)
        yield counter("outbox_write_errors", "Failed commits (disk full, I/O error)", g.storage_errors)

        fwd_b = CounterMetricFamily(P + "uplink_forwarded_batches", "Batches acknowledged", labels=["uplink"])
        fwd_r = CounterMetricFamily(P + "uplink_forwarded_records", "Records in acknowledged batches", labels=["uplink"])
        fail = CounterMetricFamily(P + "uplink_failures", "Failed connects or sends", labels=["uplink"])
        dead = CounterMetricFamily(P + "uplink_dead_lettered", "Batches refused as malformed", labels=["uplink"])
        conn = GaugeMetricFamily(P + "uplink_connected", "1 while connected", labels=["uplink"])
        ucnt = CounterMetricFamily(P + "uplink_events", "Uplink-specific counters, all kinds under one name "
                                   "(use edge_gateway_uplink_event_<kind>_total)", labels=["uplink", "counter"])
        backlog = GaugeMetricFamily(P + "uplink_backlog_batches", "Batches stored, not acknowledged", labels=["uplink"])
        oldest = GaugeMetricFamily(P + "uplink_oldest_unacknowledged_age_seconds",
                                   "Age of the oldest batch not acknowledged (0 when none)", labels=["uplink"])
        last_error = InfoMetricFamily(P + "uplink_last_error", "Last failure, until the next success", labels=["uplink"])
        probed = self.probe.read() if self.probe is not None else {}
        for r in g.runners:
            count, age = probed.get(r.name, (0, 0.0))
            backlog.add_metric([r.name], count)
            oldest.add_metric([r.name], age)
            if r.last_error:
                last_error.add_metric([r.name], {"error": r.last_error[:200]})
            fwd_b.add_metric([r.name], r.forwarded_batches)
            fwd_r.add_metric([r.name], r.forwarded_records)
            fail.add_metric([r.name], r.failures)
            dead.add_metric([r.name], r.dead_lettered)
            conn.add_metric([r.name], 1.0 if r.ctx.connected else 0.0)
            for name, n in list(r.ctx.counters.items()):
                ucnt.add_metric([r.name, name], n)
        latency = HistogramMetricFamily(P + "uplink_ack_latency_seconds",
                                        "From a window batch's making (its windows closed) to its acknowledgement",
                                        labels=["uplink"])
        for r in g.runners:
            latency.add_metric([r.name], r.ack_latency.cumulative(), sum_value=r.ack_latency.total)
        yield from (fwd_b, fwd_r, fail, dead, conn, ucnt, backlog, oldest, last_error, latency)
        yield from _per_kind("uplink_event_", "uplink", [(r.name, r.ctx.counters) for r in g.runners],
                             "Uplink events of kind {name}")


class StatusBoard:
    """The gateway's registry (its counters, build info, process metrics) and the status
    built from it; exists whether or not the health listener is on (systemd STATUS= uses it)."""

    def __init__(self, gateway: Gateway) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        probe = OutboxProbe(gateway.outbox.path, [u.name for u in gateway.config.uplinks])
        self.registry.register(HealthCollector(gateway, probe))  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)

    def status(self) -> dict[str, Any]:
        return snapshot(self.registry)


class _Handler(BaseHTTPRequestHandler):
    board: StatusBoard

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, generate_latest(self.board.registry))
            return
        if path not in ("/", "/healthz", "/status.json"):
            self._answer(404, "text/plain; charset=utf-8", b"not found: try /, /metrics, /healthz, /status.json\n")
            return
        status = self.board.status()
        if path == "/healthz":
            unhealthy = status["verdict"] == "unhealthy"
            text = status["verdict"] + "".join(f"\n{reason}" for reason in status["reasons"]) + "\n"
            self._answer(503 if unhealthy else 200, "text/plain; charset=utf-8", text.encode())
        elif path == "/status.json":
            self._answer(200, "application/json", json.dumps(status, indent=1).encode())
        else:
            self._answer(200, "text/html; charset=utf-8", render_html(status).encode())

    def _answer(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        """Requests are not logged: a scrape every 15 s would fill the journal."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """The health listener on a local address (its own thread, off the event loop)."""

    def __init__(self, board: StatusBoard, listen: str) -> None:
        self.board = board
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"board": self.board})
        server_class = _Server6 if ":" in self.host else _Server
        try:
            self._server = server_class((self.host, self.port), handler)
        except OSError as error:
            raise OSError(f"health.listen {self.host}:{self.port}: cannot serve /metrics ({error.strerror or error})") from error
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()

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
