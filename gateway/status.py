"""One view of the gateway's health for people: `edge-gateway status`, `/status.json`, `/`,
`/healthz` and systemd's STATUS= line all come from `snapshot()`.

The snapshot is read from the same Prometheus registry `/metrics` serves (each component's
collector, gateway/metrics.py), so what the technician sees on the status page and what
Grafana plots can never disagree. It also carries a
verdict with its reasons:

- unhealthy (exit status 2, `/healthz` 503): the tick loop stopped committing, the outbox cannot
  be written, or a driver is waiting to restart;
- degraded (exit status 1, `/healthz` 200): a driver silent for long, an uplink with a growing
  backlog or not connected, an outbox nearly full or evicting;
- ok (exit status 0).
"""

from __future__ import annotations

import html
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from gateway.metrics import PREFIX, Samples, read_samples

__all__ = ["EXIT_CODES", "OutboxProbe", "one_line", "render_html", "render_text", "snapshot"]

P = PREFIX
EXIT_CODES = {"ok": 0, "degraded": 1, "unhealthy": 2}

# A driver without a reading this long is called silent (seconds).
SILENT_AFTER = 600.0
# An unacknowledged batch older than this makes its uplink degraded (seconds).
BACKLOG_AGE = 900.0
# The tick loop commits every commit_interval; this much longer without one is a stall.
TICK_STALL = 30.0
OUTBOX_NEARLY_FULL = 0.9


class OutboxProbe:
    """Backlog and age of the oldest unacknowledged batch per uplink, from the outbox file: the
    collector of `edge_gateway_uplink_backlog_batches` and `..._oldest_unacknowledged_age_seconds`.

    It opens its own read-only SQLite connection (WAL lets readers run beside the writer), so it
    needs nothing from the outbox object and never takes the outbox thread's time. Results are
    kept for a second: a page refresh and a scrape at once cost one query per uplink. A reload
    that changes the uplinks sets `uplinks`.
    """

    def __init__(self, path: Path, uplinks: list[str], clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._uplinks = list(uplinks)
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, tuple[int, float]]] = (0.0, {})

    @property
    def uplinks(self) -> list[str]:
        return self._uplinks

    @uplinks.setter
    def uplinks(self, names: list[str]) -> None:
        with self._lock:
            self._uplinks = list(names)
            self._cached = (0.0, {})

    def read(self) -> dict[str, tuple[int, float]]:
        """uplink -> (batches not acknowledged, age in seconds of the oldest of them or 0)."""
        with self._lock:
            at, cached = self._cached
            now = time.monotonic()
            if at and now - at < 1.0:
                return cached
            result = self._query()
            self._cached = (now, result)
            return result

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(P + "uplink_backlog_batches", "Batches stored, not acknowledged", labels=["uplink"])
        oldest = GaugeMetricFamily(P + "uplink_oldest_unacknowledged_age_seconds",
                                   "Age of the oldest batch not acknowledged (0 when none)", labels=["uplink"])
        probed = self.read()
        for name in self.uplinks:
            count, age = probed.get(name, (0, 0.0))
            backlog.add_metric([name], count)
            oldest.add_metric([name], age)
        yield from (backlog, oldest)

    def _query(self) -> dict[str, tuple[int, float]]:
        if not self.path.exists():
            return {}
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=0.5)
        except sqlite3.Error:
            return {}
        try:
            cursors = dict(db.execute("SELECT uplink, acked FROM cursors").fetchall())
            out = {}
            now = self.clock()
            for name in self.uplinks:
                count, oldest = db.execute(
                    "SELECT COUNT(*), MIN(created) FROM batches WHERE seq > ?", (cursors.get(name, 0),)
                ).fetchone()
                out[name] = (int(count), max(0.0, now - oldest) if oldest is not None else 0.0)
            return out
        except sqlite3.Error:
            return {}
        finally:
            db.close()


def _by(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {labels.get(label, ""): value for labels, value in samples.get(P + name, [])}


def _one(samples: Samples, name: str, default: float = 0.0) -> float:
    rows = samples.get(P + name, [])
    return rows[0][1] if rows else default


def snapshot(registry: CollectorRegistry, now: float | None = None) -> dict[str, Any]:
    """Everything the status views show, as plain JSON-able data."""
    now = time.time() if now is None else now
    s = read_samples(registry)
    info = s.get(P + "build_info", [({}, 1.0)])[0][0]
    started = _one(s, "start_time_seconds", now)
    readings = _by(s, "readings_total", "driver")
    seen = _by(s, "driver_last_seen_timestamp_seconds", "driver")
    up = _by(s, "driver_up", "driver")
    devices = _by(s, "driver_devices", "driver")
    restarts = _by(s, "driver_restarts_total", "driver")
    errors: dict[str, float] = {}
    for labels, value in s.get(P + "decode_errors_total", []):
        errors[labels["driver"]] = errors.get(labels["driver"], 0.0) + value
    drivers = [
        {
            "name": name,
            "up": bool(up.get(name, 0)),
            "readings": int(readings[name]),
            "devices": int(devices.get(name, 0)),
            "decode_errors": int(errors.get(name, 0)),
            "restarts": int(restarts.get(name, 0)),
            "last_reading_age": round(now - seen[name], 1) if seen.get(name) else None,
        }
        for name in readings
    ]
    backlog = _by(s, "uplink_backlog_batches", "uplink")
    oldest = _by(s, "uplink_oldest_unacknowledged_age_seconds", "uplink")
    connected = _by(s, "uplink_connected", "uplink")
    forwarded = _by(s, "uplink_forwarded_batches_total", "uplink")
    failures = _by(s, "uplink_failures_total", "uplink")
    last_error = {labels["uplink"]: labels.get("error", "") for labels, _ in s.get(P + "uplink_last_error_info", [])}
    uplinks = [
        {
            "name": name,
            "connected": bool(connected.get(name, 0)),
            "forwarded_batches": int(forwarded[name]),
            "backlog_batches": int(backlog.get(name, 0)),
            "oldest_unacknowledged_age": round(oldest.get(name, 0.0), 1),
            "failures": int(failures.get(name, 0)),
            "last_error": last_error.get(name, ""),
        }
        for name in forwarded
    ]
    max_bytes = _one(s, "outbox_max_bytes", 1.0) or 1.0
    outbox = {
        "batches": int(_one(s, "outbox_batches")),
        "bytes": int(_one(s, "outbox_bytes")),
        "max_bytes": int(max_bytes),
        "fill": round(_one(s, "outbox_bytes") / max_bytes, 4),
        "evicted_batches": int(_one(s, "outbox_evicted_batches_total")),
        "write_errors": int(_one(s, "outbox_write_errors_total")),
        "storage_failing": bool(_one(s, "outbox_storage_failing")),
    }
    last_tick = _one(s, "last_tick_timestamp_seconds")
    status: dict[str, Any] = {
        "gateway": info.get("gateway", ""),
        "version": info.get("version", ""),
        "now": round(now, 3),
        "uptime_seconds": round(now - started, 1),
        "windows_closed": int(_one(s, "windows_closed_total")),
        "drivers": drivers,
        "uplinks": uplinks,
        "outbox": outbox,
    }
    status["verdict"], status["reasons"] = _verdict(status, now - last_tick if last_tick else 0.0)
    return status


def _verdict(status: dict[str, Any], tick_age: float) -> tuple[str, list[str]]:
    bad: list[str] = []
    weak: list[str] = []
    if tick_age > TICK_STALL:
        bad.append(f"no outbox commit for {tick_age:.0f} s (the pipeline is stuck)")
    if status["outbox"]["storage_failing"]:
        bad.append("the outbox cannot be written (disk full or read-only?)")
    for d in status["drivers"]:
        if not d["up"]:
            bad.append(f"driver {d['name']} failed and waits to restart")
        elif d["last_reading_age"] is None:
            weak.append(f"driver {d['name']} has not delivered a reading yet")
        elif d["last_reading_age"] > SILENT_AFTER:
            weak.append(f"driver {d['name']} silent for {d['last_reading_age']:.0f} s")
    for u in status["uplinks"]:
        if u["oldest_unacknowledged_age"] > BACKLOG_AGE:
            weak.append(f"uplink {u['name']}: oldest batch waits for {u['oldest_unacknowledged_age']:.0f} s")
        elif not u["connected"] and u["backlog_batches"]:
            weak.append(f"uplink {u['name']} not connected, {u['backlog_batches']} batches waiting")
    if status["outbox"]["fill"] >= OUTBOX_NEARLY_FULL:
        weak.append(f"outbox {status['outbox']['fill']:.0%} full")
    if status["outbox"]["evicted_batches"]:
        weak.append(f"{status['outbox']['evicted_batches']} batches evicted (outbox was full)")
    if bad:
        return "unhealthy", bad + weak
    return ("degraded", weak) if weak else ("ok", [])


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _bytes(n: float) -> str:
    return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{n / 1024:.0f} KiB"


def one_line(status: dict[str, Any]) -> str:
    """For systemd's STATUS= (shown by `systemctl status`)."""
    readings = sum(d["readings"] for d in status["drivers"])
    backlog = sum(u["backlog_batches"] for u in status["uplinks"])
    text = (f"{status['verdict']}: {readings} readings, {status['windows_closed']} windows, "
            f"backlog {backlog} batches, outbox {status['outbox']['fill']:.0%}")
    return text + (f"; {status['reasons'][0]}" if status["reasons"] else "")


def render_text(status: dict[str, Any]) -> str:
    """One screen (80 columns) for `edge-gateway status`."""
    lines = [
        f"gateway {status['gateway']}   edge-gateway {status['version']}   up {_age(status['uptime_seconds'])}",
        f"verdict: {status['verdict'].upper()}",
        *[f"  - {r}" for r in status["reasons"]],
        "",
        f"{'driver':<20} {'state':<10} {'devices':>7} {'readings':>10} {'errors':>8} {'last reading':>14}",
    ]
    for d in status["drivers"]:
        state = "running" if d["up"] else "restarting"
        lines.append(f"{d['name'][:20]:<20} {state:<10} {d['devices']:>7,} {d['readings']:>10,} {d['decode_errors']:>8,} "
                     f"{_age(d['last_reading_age']) + ' ago' if d['last_reading_age'] is not None else 'never':>14}")
    lines += ["", f"{'uplink':<20} {'state':<12} {'forwarded':>10} {'backlog':>8} {'oldest':>8}  last error"]
    for u in status["uplinks"]:
        state = "connected" if u["connected"] else "down"
        lines.append(f"{u['name'][:20]:<20} {state:<12} {u['forwarded_batches']:>10,} {u['backlog_batches']:>8,} "
                     f"{_age(u['oldest_unacknowledged_age']):>8}  {(u['last_error'] or '-')[:40]}")
    o = status["outbox"]
    lines += ["", f"outbox  {o['batches']:,} batches, {_bytes(o['bytes'])} of {_bytes(o['max_bytes'])} "
                  f"({o['fill']:.1%}), {o['evicted_batches']:,} evicted, {o['write_errors']:,} write errors"]
    return "\n".join(lines)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>{gateway} - {verdict}</title>
<style>
body{{font:15px/1.35 system-ui,sans-serif;margin:0;padding:10px;color:#111;background:#fafafa}}
h1{{font-size:18px;margin:0 0 4px}} .sub{{color:#555;font-size:13px}}
.v{{display:block;padding:8px 10px;margin:8px 0;border-radius:6px;font-weight:600;color:#fff}}
.ok{{background:#1b7f3b}} .degraded{{background:#b36b00}} .unhealthy{{background:#b3261e}}
ul{{margin:4px 0 0 18px;padding:0;font-weight:400}}
table{{border-collapse:collapse;width:100%;margin:6px 0 10px;font-size:14px}}
th,td{{text-align:left;padding:3px 4px;border-bottom:1px solid #ddd}} td.n,th.n{{text-align:right}}
h2{{font-size:15px;margin:10px 0 0}}
</style></head><body>
<h1 id="gateway">{gateway}</h1>
<div class="sub">edge-gateway {version} &middot; up {uptime} &middot; refreshes every 5 s</div>
<div id="verdict" class="v {verdict}">{verdict_upper}{reasons}</div>
<h2>Drivers</h2>
<table><tr><th>driver</th><th class="n">devices</th><th class="n">readings</th><th class="n">errors</th><th class="n">last</th></tr>
{drivers}</table>
<h2>Uplinks</h2>
<table><tr><th>uplink</th><th class="n">sent</th><th class="n">backlog</th><th class="n">oldest</th></tr>
{uplinks}</table>
<h2>Outbox</h2>
<div id="outbox">{outbox}</div>
<script>/* lets a headless test see whether the page fits the screen */
document.body.dataset.fits = String(document.documentElement.scrollWidth <= innerWidth &&
  document.documentElement.scrollHeight <= innerHeight);</script>
</body></html>
"""


def render_html(status: dict[str, Any]) -> str:
    """The status page: one screen on a phone, no external assets, refreshes itself."""
    e = html.escape
    reasons = "".join(f"<li>{e(r)}</li>" for r in status["reasons"])
    drivers = "".join(
        f'<tr class="driver"><td>{e(d["name"])}{"" if d["up"] else " (restarting)"}</td>'
        f'<td class="n">{d["devices"]:,}</td><td class="n">{d["readings"]:,}</td><td class="n">{d["decode_errors"]:,}</td>'
        f'<td class="n">{e(_age(d["last_reading_age"]))}</td></tr>'
        for d in status["drivers"]
    )
    uplinks = "".join(
        f'<tr class="uplink"><td>{e(u["name"])}{"" if u["connected"] else " (down)"}'
        f'{"<br><small>" + e(u["last_error"]) + "</small>" if u["last_error"] else ""}</td>'
        f'<td class="n">{u["forwarded_batches"]:,}</td><td class="n">{u["backlog_batches"]:,}</td>'
        f'<td class="n">{e(_age(u["oldest_unacknowledged_age"]))}</td></tr>'
        for u in status["uplinks"]
    )
    o = status["outbox"]
    outbox = (f"{o['batches']:,} batches, {_bytes(o['bytes'])} of {_bytes(o['max_bytes'])} "
              f"({o['fill']:.1%}), {o['evicted_batches']:,} evicted")
    return _PAGE.format(
        gateway=e(status["gateway"]), version=e(status["version"]), uptime=e(_age(status["uptime_seconds"])),
        verdict=status["verdict"], verdict_upper=status["verdict"].upper(),
        reasons=f"<ul>{reasons}</ul>" if reasons else "", drivers=drivers, uplinks=uplinks, outbox=outbox,
    )
