"""The loss report: what the simulators sent against what the platform holds, per protocol.

Books on both sides:
- sent: readings in the gateway's own terms, counted by the simulators (frames x the readings the
  driver makes of each; the exact count per frame comes from the driver's pure decoder applied
  to the very payload that was sent);
- covered: the sum of `count` of the latest revision of every window key that reached the
  platform (simulators.platform.Ledger: schema-checked, duplicates by batch id and window key
  removed), from the MQTT receiver or from the file uplink's JSON Lines;
- named losses: frames the simulators damaged on purpose; readings the gateway dropped as too
  late or too far in the future (or a 1.6 StopTransaction of a transaction it did not know);
  BLE measurements the mock BlueZ advertised only while the gateway's scanner had no discovery
  session (`not_scanning`, seen on the private bus by simulators.city.scan_watch: bleak drops
  them); and per device: what evicted batches covered (by seq and window key,
  simulators.city.attribution), what was sent while the gateway was down, what a SIGKILL caught
  unstored (Outages). Decode errors by cause come from the gateway's /metrics.

`unexplained = sent - covered - named losses`; it must be 0 in a run where nothing went wrong
that the report cannot name, and every seq missing at the platform must be one the gateway
evicted (`missing_seq_not_evicted`). Readings the gateway derives itself (sensor_status) are shown
apart: no device sent them.
"""

from __future__ import annotations

import json
import re
import textwrap
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.batch import BatchDecodeError, decode_document
from simulators.city.attribution import EvictionLoss
from simulators.platform.ledger import Ledger

__all__ = ["COLUMNS", "BatchBooks", "Outages", "FileTail", "build_report", "chain", "fit", "parse_metrics", "render_report"]


class BatchBooks:
    """A Ledger plus end-to-end latency samples: arrival time minus window end, for first
    revisions (the last reading of a window is produced before its end, so this is the age of
    the window's newest reading when the platform gets it, at least `grace`)."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.latencies: list[float] = []
        # Uplink bytes as the platform got them (MQTT payloads of batches and events; the file
        # uplink's bytes as written, compressed), and window records in distinct batches.
        self.wire_bytes = 0
        self.records_received = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        # Only windows closed while the devices report count: the final drain closes open
        # windows before their end, which says nothing about delivery latency.
        self.measuring = True

    def take(self, payload: bytes, arrival: float, content_type: str | None = None, topic: str = "") -> None:
        self.ledger.ingest(payload, content_type, topic)
        self.note_latency(payload, arrival)

    def note_latency(self, payload: bytes, arrival: float) -> None:
        try:
            doc = decode_document(bytes(payload))
        except BatchDecodeError:
            return
        with self._lock:
            if doc.batch_id in self._seen:
                return
            self._seen.add(doc.batch_id)
            self.records_received += len(doc.windows)
            if self.measuring:
                self.latencies.extend(arrival - (r.start + r.window) for r in doc.windows if r.revision == 0)

    def percentile(self, q: float) -> float | None:
        with self._lock:
            if not self.latencies:
                return None
            ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class FileTail:
    """Reads the file uplink's batches as they grow (rotation-aware), into BatchBooks. The file
    is a sequence of gzip members, one JSON line each (`batches.jsonl.gz`), or plain JSON Lines."""

    def __init__(self, directory: Path, books: BatchBooks) -> None:
        self.directory = directory
        self.books = books
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}
        self._inflaters: dict[str, Any] = {}

    def poll(self) -> int:
        """Read what is new; returns batches taken."""
        taken = 0
        now = time.time()
        if not self.directory.is_dir():
            return 0
        # rotated files are renamed from batches.jsonl[.gz]: read them by inode so nothing is read twice
        files: list[Path] = []
        for suffix in (".jsonl.gz", ".jsonl"):
            rotated = [(p.name[len("batches-"):-len(suffix)], p) for p in self.directory.glob(f"batches-*{suffix}")]
            files += [p for n, p in sorted((int(n), p) for n, p in rotated if n.isdigit())]
            files.append(self.directory / f"batches{suffix}")
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                continue
            key = f"{stat.st_dev}:{stat.st_ino}"
            offset = self._offsets.get(key, 0)
            if stat.st_size <= offset:
                continue
            with open(path, "rb") as source:
                source.seek(offset)
                data = source.read()
                self._offsets[key] = source.tell()
            self.books.wire_bytes += len(data)
            if path.name.endswith(".gz"):
                data = self._inflate(key, data)
            lines = (self._partial.pop(key, b"") + data).split(b"\n")
            if lines[-1]:
                self._partial[key] = lines[-1]
            for line in lines[:-1]:
                if line.strip():
                    self.books.take(line, now)
                    taken += 1
        return taken

    def _inflate(self, key: str, data: bytes) -> bytes:
        """Inflate what arrived of a sequence of gzip members; a member cut short waits in its
        decompressor for the rest."""
        out = []
        while data:
            inflater = self._inflaters.get(key)
            if inflater is None:
                inflater = self._inflaters[key] = zlib.decompressobj(wbits=31)
            out.append(inflater.decompress(data))
            if not inflater.eof:
                break
            data = inflater.unused_data
            del self._inflaters[key]
        return b"".join(out)


def parse_metrics(text: str) -> dict[str, Any]:
    """The gateway's /metrics, reduced to what the report needs."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"decode_errors": {}, "readings": {}, "driver_events": {}, "scalars": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name.endswith("_created"):
                continue
            short = name.removeprefix("edge_gateway_").removesuffix("_total")
            if short == "decode_errors":
                out["decode_errors"][f"{labels['driver']}:{labels['cause']}"] = int(value)
            elif short == "readings":
                out["readings"][labels["driver"]] = int(value)
            elif short == "driver_events":
                out["driver_events"][f"{labels['driver']}:{labels['counter']}"] = int(value)
            elif not labels:
                out["scalars"][short] = value
    return out


LINK_LOSS_REASONS = {
    "serial": "Modbus answers that reached the driver after its timeout (asked again)",
    "lorawan-udp": "datagrams the kernel dropped at the gateway's UDP socket (receive buffer full)",
}


def _deficit_order(item: tuple[str, int]) -> int:
    return -abs(item[1])


class Outages:
    """Readings the devices sent while the gateway could not take them, by device: between a
    stop signal and the restarted gateway listening again (`gateway_down`), and within the
    checkpoint bound before a SIGKILL (`unstored`: received but not yet in the outbox, or still
    in a socket buffer; a crash loses at most `windows.checkpoint` seconds of it). Each explains
    at most the device's deficit, never a reading sent outside those intervals."""

    def __init__(self) -> None:
        self.gateway_down: Counter[str] = Counter()
        self.unstored: Counter[str] = Counter()
        self.intervals: list[dict[str, Any]] = []


PER_DEVICE = ("evicted", "gateway_down", "unstored")


def build_report(
    *,
    scenario_name: str,
    scale: float,
    groups: list[Any],
    books: BatchBooks,
    metrics: dict[str, Any],
    gateway_summary: str,
    extra: dict[str, Any],
    metrics_at_stop: dict[str, Any] | None = None,
    udp_drops: int = 0,
    evictions: EvictionLoss | None = None,
    outages: Outages | None = None,
    withhold: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """`withhold` names per-device categories (PER_DEVICE) that are measured but not applied:
    their readings stay unexplained (tests prove that nothing else absorbs them)."""
    ledger = books.ledger
    covered: Counter[str] = Counter()
    derived: Counter[str] = Counter()
    from simulators.city.fleet import DERIVED_METRICS

    for (_gateway, device, metric, _start), window in list(ledger.windows.items()):
        if metric in DERIVED_METRICS:
            derived[device] += window.count
        else:
            covered[device] += window.count

    def label_of(device: str) -> str:
        for group in groups:
            if group.owns(device):
                return str(group.label(device))
        return "unknown"

    sent: Counter[str] = Counter()
    damaged: Counter[str] = Counter()
    cut: Counter[str] = Counter()
    unheard: Counter[str] = Counter()
    for group in groups:
        sent.update(group.sent())
        damaged.update(group.damaged())
        cut.update(group.lost_in_flight())
        unheard.update(group.not_scanning())
    labels = sorted({label_of(d) for d in (*sent, *covered)} - {"unknown"} | ({"unknown"} if any(label_of(d) == "unknown" for d in covered) else set()))
    scalars = metrics.get("scalars", {})
    gateway_drops = {
        "late_dropped": int(scalars.get("late_dropped", 0)),
        "future_dropped": int(scalars.get("future_dropped", 0)),
        "unknown_metric_dropped": int(scalars.get("unknown_metric_dropped", 0)),
    }
    # A 1.6 StopTransaction (meterStop, one reading) whose transaction the OCPP driver does not
    # know is dropped and counted; after a SIGKILL that is a transaction begun since the driver
    # last wrote its map (every 2 s, drivers/ocpp/transactions.py). A 2.0.1 TransactionEvent
    # dropped so carries more: those readings stay unexplained.
    unknown_transactions = sum(n for key, n in metrics.get("decode_errors", {}).items()
                               if key.endswith(":unknown_transaction"))
    evicted_records = int(scalars.get("outbox_evicted_records", 0))
    # the readings those records covered as the gateway counts them (revisions counted whole):
    # shown; what evictions explain is measured per window key (simulators.city.attribution)
    evicted_readings = int(scalars.get("outbox_evicted_readings", 0))
    gaps = ledger.gaps()
    # The gateway's drop counters are gateway-wide (not per driver): they are attributed to the
    # protocols that miss readings, largest deficit first; a remainder is reported, not hidden.
    pool = sum(gateway_drops.values())
    # A Modbus answer that reaches the driver after its timeout was sent (and counted) but the
    # driver asked again and used the second one: 2 readings (XY-MD02) per such timeout while
    # the devices were still answering (the driver's `timeouts` counter when the senders stopped).
    events_at_stop = (metrics_at_stop or {}).get("driver_events", {})
    late_answers = 2 * sum(n for key, n in events_at_stop.items() if key.startswith("serial-modbus") and key.endswith(":timeouts"))
    # Per device, in this order: what evicted batches covered (exact, by window key), then what
    # was sent while the gateway was down, then what a SIGKILL caught unstored (each at most
    # what the device still misses).
    outages = outages or Outages()
    measured = {"evicted": evictions.by_device if evictions else Counter(), "gateway_down": outages.gateway_down,
                "unstored": outages.unstored}
    named: dict[str, Counter[str]] = {k: Counter() for k in PER_DEVICE}
    withheld: Counter[str] = Counter()
    remaining: dict[str, int] = {}
    for device in set(sent) | set(covered):
        left = sent[device] - covered[device] - damaged[device] - cut[device] - unheard[device]
        room = left  # what the next category may still explain (withheld amounts use it up too)
        for category in PER_DEVICE:
            amount = measured[category][device]
            if category != "evicted":
                amount = min(max(0, room), amount)
            room -= amount
            if category in withhold:
                withheld[category] += amount
                continue
            named[category][device] = amount
            left -= amount
        remaining[device] = left
    protocols: dict[str, dict[str, Any]] = {}
    for label in labels:
        devices = [d for d in set(sent) | set(covered) if label_of(d) == label]
        s = sum(sent[d] for d in devices)
        c = sum(covered[d] for d in devices)
        dmg = sum(damaged[d] for d in devices)
        unplugged = sum(cut[d] for d in devices)
        no_scan = sum(unheard[d] for d in devices)
        per_device = {k: sum(named[k][d] for d in devices) for k in PER_DEVICE}
        missing = sum(remaining[d] for d in devices)
        attributed = min(pool, max(0, missing))
        pool -= attributed
        late = min(late_answers, max(0, missing - attributed)) if label == "serial" else 0
        # datagrams the kernel dropped at the gateway's UDP socket (buffer full): which ones is
        # unknown (joins, TX_ACKs or data; each data frame comes once per packet forwarder),
        # so they explain at most 8 readings each (the most a simulated frame carries)
        if label == "lorawan-udp":
            late = min(8 * udp_drops, max(0, missing - attributed))
        if label == "ocpp":
            taken = min(unknown_transactions, max(0, missing - attributed))
            attributed += taken
            unknown_transactions -= taken
        worst = sorted(((d, remaining[d]) for d in devices if remaining[d]), key=_deficit_order)[:5]
        protocols[label] = {
            "devices": len([d for d in devices if sent[d]]),
            "sent": s,
            "covered": c,
            "damaged_on_purpose": dmg,
            "in_flight_when_unplugged": unplugged,
            "not_scanning": no_scan,
            "gateway_dropped": attributed,
            **per_device,
            "link_losses": late,
            "link_loss_reason": LINK_LOSS_REASONS.get(label, ""),
            "unexplained": missing - attributed - late,
            "gateway_derived": sum(derived[d] for d in devices),
            "worst_devices": dict(worst),
        }
    ledger_report = ledger.report()
    totals = {k: sum(p[k] for p in protocols.values())
              for k in ("sent", "covered", "damaged_on_purpose", "in_flight_when_unplugged", "not_scanning",
                        "gateway_dropped", "link_losses", *PER_DEVICE, "unexplained")}
    evicted_seqs: set[int] = set()
    for first, last in (evictions.ranges if evictions else []):
        evicted_seqs.update(range(first, last + 1))
    return {
        "scenario": scenario_name,
        "scale": scale,
        "protocols": protocols,
        "totals": totals,
        "late_revisions": {
            "windows_revised_by_gateway": int(scalars.get("windows_revised", 0)),
            "superseded_at_platform": ledger_report["duplicates"]["superseded_revisions"],
            "late_readings_accepted": int(scalars.get("late_accepted", 0)),
        },
        "duplicates": ledger_report["duplicates"],
        "dropped": {
            **gateway_drops,
            "outbox_evicted_batches": int(scalars.get("outbox_evicted_batches", 0)),
            "outbox_evicted_records": evicted_records,
            "outbox_evicted_readings": evicted_readings,
            "missing_seq": gaps,
            # seqs missing at the platform that the gateway did not evict: batches lost unnamed
            "missing_seq_not_evicted": {stream: [q for q in seqs if q not in evicted_seqs]
                                        for stream, seqs in gaps.items() if any(q not in evicted_seqs for q in seqs)},
            "evictions": evictions.as_report() if evictions else {},
            "outages": outages.intervals,
            "withheld": dict(withheld),
            "decode_errors": metrics.get("decode_errors", {}),
            "invalid_batches": ledger_report["invalid"],
        },
        "platform": {k: ledger_report[k] for k in ("messages", "batches", "window_records", "readings_covered", "events")},
        "gateway": {"readings_in": sum(metrics.get("readings", {}).values()),
                    "readings_by_driver": metrics.get("readings", {}),
                    "driver_events": metrics.get("driver_events", {}),
                    "clock_jumps": int(scalars.get("clock_jumps", 0)), "summary": gateway_summary},
        **extra,
    }


# The report fits a terminal of this many columns (a technician's laptop, a phone over SSH).
COLUMNS = 100


def fit(lines: list[str], width: int = COLUMNS) -> str:
    """Wrap each line to `width` columns, continuation lines indented under their first word."""
    out: list[str] = []
    for text in "\n".join(lines).splitlines():
        if len(text) <= width:
            out.append(text)
            continue
        indent = " " * (len(text) - len(text.lstrip()) + 2)
        out.extend(textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False))
    return "\n".join(out)


def chain(summary: str) -> str | None:
    """The gateway's own run summary as one line: readings in, windows closed, batches made and
    forwarded, and where the batches are on disk."""
    fields: dict[str, str] = {}
    for line in summary.splitlines():
        match = re.match(r"\s+(readings in|windows closed|batches written|forwarded|output)\s+(.*)$", line)
        if match:
            fields[match.group(1)] = match.group(2).strip()
    if "readings in" not in fields:
        return None
    parts = [f"{fields['readings in']} readings in", f"{fields.get('windows closed', '?')} windows closed",
             f"{fields.get('batches written', '?')} batches", f"forwarded {fields.get('forwarded', '?')}"]
    text = "  chain: " + " -> ".join(parts)
    if "output" in fields:
        text += f"\n  batches on disk: {fields['output']}"
    return text


def render_report(report: dict[str, Any]) -> str:
    lines = [f"city loss report: {report['scenario']} at scale {report['scale']:g}"]
    head = (f"  {'protocol':<13}{'devices':>8}{'sent':>11}{'covered':>11}{'damaged':>9}{'unplug':>8}{'no scan':>9}"
            f"{'gw drop':>9}{'link':>9}{'unexpl.':>9}")
    lines.append(head)
    for name, p in report["protocols"].items():
        lines.append(f"  {name:<13}{p['devices']:>8,}{p['sent']:>11,}{p['covered']:>11,}{p['damaged_on_purpose']:>9,}"
                     f"{p['in_flight_when_unplugged']:>8,}{p['not_scanning']:>9,}{p['gateway_dropped']:>9,}"
                     f"{p['link_losses']:>9,}{p['unexplained']:>9,}")
    t = report["totals"]
    lines.append(f"  {'total':<13}{'':>8}{t['sent']:>11,}{t['covered']:>11,}{t['damaged_on_purpose']:>9,}"
                 f"{t['in_flight_when_unplugged']:>8,}{t['not_scanning']:>9,}{t['gateway_dropped']:>9,}"
                 f"{t['link_losses']:>9,}{t['unexplained']:>9,}")
    lines += [
        "  damaged = in frames corrupted on purpose; unplug = unread when a serial cable was pulled;",
        "  no scan = BLE measurements advertised only while the gateway's scanner was off (on the bus);",
        "  gw drop = too late/future/unknown metric/transaction; link = Modbus answers after the driver's timeout,",
        "  LoRaWAN datagrams the kernel dropped at the gateway's socket",
    ]
    lr, dup, drop = report["late_revisions"], report["duplicates"], report["dropped"]
    lines.append(f"  late: {lr['late_readings_accepted']:,} readings accepted late, {lr['windows_revised_by_gateway']:,} window "
                 f"revisions ({lr['superseded_at_platform']:,} superseded at the platform)")
    lines.append(f"  duplicates removed by the platform: {dup['batches']:,} batches, {dup['windows']:,} windows, "
                 f"{dup['events']:,} events")
    lines.append(f"  dropped by the gateway: {drop['late_dropped']:,} too late, {drop['future_dropped']:,} future, "
                 f"{drop['outbox_evicted_batches']:,} batches evicted ({drop['outbox_evicted_records']:,} records), "
                 f"missing seq {sum(len(v) for v in drop['missing_seq'].values()):,} "
                 f"({sum(len(v) for v in drop['missing_seq_not_evicted'].values()):,} not evicted)")
    if any(t[k] for k in PER_DEVICE) or drop["withheld"]:
        ev = drop["evictions"]
        seqs = ", ".join(f"{q}: {sum(d.values()):,}" for q, d in list(ev.get("by_seq", {}).items())[:8])
        more = " ..." if len(ev.get("by_seq", {})) > 8 else ""
        lines.append(f"  per device: {t['evicted']:,} evicted (by seq {seqs or '-'}{more}), {t['gateway_down']:,} sent "
                     f"while the gateway was down, {t['unstored']:,} unstored at a SIGKILL"
                     + (f"; withheld (measured, not applied): {drop['withheld']}" if drop["withheld"] else ""))
        if ev.get("undescribed_seqs"):
            lines.append(f"  ! evicted seqs with no record of their content: {ev['undescribed_seqs'][:20]}")
    if drop["decode_errors"]:
        causes = ", ".join(f"{k} {v:,}" for k, v in sorted(drop["decode_errors"].items()))
        lines.append(f"  decode errors (gateway /metrics, per copy heard): {causes}")
    faults = report.get("faults", [])
    if faults:
        lines.append("  faults injected: " + "; ".join(f["what"] for f in faults))
    for name, p in report["protocols"].items():
        if p["unexplained"]:
            lines.append(f"  ! {name}: {p['unexplained']:,} readings unexplained; worst devices {p['worst_devices']}")
    return fit(lines)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
