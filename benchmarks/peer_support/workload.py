"""The shared workload and the upstream books of `benchmarks.peer`; pure (bytes in, counts out).

One reading is one ChirpStack v4 uplink event (JSON marshaler, chirpstack.io docs, Integrations >
Events > "up") whose `object` (the codec's output) carries a temperature and a humidity: two
values. Both gateways read the very same bytes from the same input topic.

Upstream, edge-gateway's window records say how many readings each window covers (`count`; a late
revision repeats the merged count, so the highest revision of a window key counts), and
ThingsBoard IoT Gateway's `v1/gateway/telemetry` messages carry the values themselves
(`{"<device>": [{"ts": ms, "values": {...}}]}`, ThingsBoard gateway MQTT API).
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any, Final

from simulators.platform.ledger import expand_v2

__all__ = [
    "METRICS",
    "PROBE_EUI",
    "EdgeBooks",
    "ThingsBoardBooks",
    "dev_eui",
    "iso_time",
    "uplink",
    "uplink_topic",
]

# The readiness probe's device: its readings prove the whole path works before the clock starts,
# and are kept out of the books.
PROBE_EUI: Final = "ffffffffffffffff"
# Metric name in edge-gateway's catalog == key in the ThingsBoard converter mapping.
METRICS: Final = ("temperature", "humidity")
_APPLICATION: Final = "climate"



def dev_eui(index: int) -> str:
    """DevEUI of sensor number `index` (16 lower-case hex digits, never the probe's)."""
    return f"70b3d5{index:010x}"


def uplink_topic(eui: str) -> str:
    return f"application/{_APPLICATION}/device/{eui}/event/up"


def iso_time(ts: float) -> str:
    """RFC 3339 with microseconds and `Z`, as ChirpStack writes event times."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def uplink(eui: str, fcnt: int, ts: float, temperature: float, humidity: float) -> bytes:
    """One ChirpStack v4 `up` event with a decoded object and no radio metadata (so both
    gateways forward exactly the two measured values)."""
    doc: dict[str, Any] = {
        "deduplicationId": f"00000000-0000-4000-8000-{fcnt:012x}",
        "time": iso_time(ts),
        "deviceInfo": {
            "tenantName": "city",
            "applicationId": _APPLICATION,
            "applicationName": _APPLICATION,
            "deviceProfileName": "climate-th",
            "deviceName": eui,
            "devEui": eui,
        },
        "fCnt": fcnt,
        "fPort": 2,
        "confirmed": False,
        "object": {"temperature": temperature, "humidity": humidity},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class EdgeBooks:
    """Readings covered by edge-gateway batch documents (`<prefix>/<gateway>/batch`)."""

    def __init__(self, exclude_device: str = f"lora:{PROBE_EUI}") -> None:
        self.exclude_device = exclude_device
        self._windows: dict[tuple[str, str, int], tuple[int, int]] = {}  # key -> (revision, count)
        self.covered: dict[str, int] = dict.fromkeys(METRICS, 0)
        self.probe_records = 0
        self.batches = 0
        self.records = 0
        self.revisions = 0
        self.bytes = 0

    def ingest(self, payload: bytes | bytearray) -> None:
        self.batches += 1
        self.bytes += len(payload)  # as sent: gzip by default
        doc = json.loads(gzip.decompress(bytes(payload)) if payload[:2] == b"\x1f\x8b" else payload)
        records = expand_v2(doc) if doc.get("version") == 2 else doc.get("windows", ())
        for record in records:
            if record["device"] == self.exclude_device:
                self.probe_records += 1
                continue
            self.records += 1
            key = (record["device"], record["metric"], record["start"])
            revision, count = record.get("revision", 0), record["count"]
            seen = self._windows.get(key)
            if seen is not None:
                self.revisions += 1
                if revision <= seen[0]:
                    continue  # a duplicate or an older revision: covers nothing new
                self.covered[record["metric"]] = self.covered.get(record["metric"], 0) - seen[1]
            self._windows[key] = (revision, count)
            self.covered[record["metric"]] = self.covered.get(record["metric"], 0) + count

    def readings_covered(self) -> int:
        """Uplinks whose every value arrived: the least-covered metric decides."""
        return min(self.covered.get(metric, 0) for metric in METRICS)


class ThingsBoardBooks:
    """Values in ThingsBoard IoT Gateway telemetry messages (`v1/gateway/telemetry`)."""

    def __init__(self, exclude_device: str = PROBE_EUI) -> None:
        self.exclude_device = exclude_device
        self.covered: dict[str, int] = dict.fromkeys(METRICS, 0)
        self.probe_values = 0
        self.messages = 0
        self.bytes = 0

    def ingest(self, payload: bytes | bytearray) -> None:
        doc = json.loads(payload)
        self.messages += 1
        self.bytes += len(payload)
        for device, entries in doc.items():
            if isinstance(entries, dict):
                entries = [entries]
            for entry in entries:
                values = entry.get("values", entry) if isinstance(entry, dict) else {}
                if device == self.exclude_device:
                    self.probe_values += len(values)
                    continue
                for key in values:
                    if key in self.covered:
                        self.covered[key] += 1

    def readings_covered(self) -> int:
        return min(self.covered.get(metric, 0) for metric in METRICS)
