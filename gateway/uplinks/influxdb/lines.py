"""Batch documents as InfluxDB line protocol (design.md, The platform contract).

Sans-I/O. One point per window record: measurement = the metric (optionally prefixed), tags
`gateway` and `device` (plus configured static tags), fields from the aggregate, timestamp =
window start. Escaping comes from influxdb-client's `Point`, so names with spaces, commas or
quotes are written the way every InfluxDB parser reads them.

Fields per kind (absent values are not written):
    all      count (int), window (int, seconds), revision (int)
    gauge    min, max, mean, last (float)
    counter  first, last, delta (float), resets (int)
    state    last (string), transitions (int), dur_<state> (float seconds in that state)

Priority events become points of measurement `event` (prefixed too), tags gateway, device,
name, severity (and metric), field `value` (float) or `text` (string) and `detail_<key>`
strings, timestamp = the event time in milliseconds. Window timestamps are whole seconds written
at millisecond precision, so one write carries both kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from gateway.batch import BatchDocument, EventRecord, WindowRecord

__all__ = ["PRECISION", "document_lines", "event_point", "state_point", "window_point"]

PRECISION: Final = "ms"
_MS: Final = WritePrecision.MS

# WindowRecord attribute -> field name; written when not None.
_FLOAT_FIELDS: Final = ("min", "max", "mean", "first", "delta")
_INT_FIELDS: Final = ("resets", "transitions")


def window_point(gateway: str, record: WindowRecord, *, prefix: str = "",
                 tags: Mapping[str, str] = {}) -> Point:  # noqa: B006 - read-only default
    point = Point(prefix + record.metric).tag("gateway", gateway).tag("device", record.device)
    for key, value in tags.items():
        point.tag(key, value)
    point.field("count", int(record.count))
    point.field("window", int(record.window))
    point.field("revision", int(record.revision))
    for name in _FLOAT_FIELDS:
        value = getattr(record, name)
        if value is not None:
            point.field(name, float(value))
    for name in _INT_FIELDS:
        value = getattr(record, name)
        if value is not None:
            point.field(name, int(value))
    if record.last is not None:
        point.field("last", record.last if isinstance(record.last, str) else float(record.last))
    if record.durations:
        for state, seconds in record.durations.items():
            point.field(f"dur_{state}", float(seconds))
    return point.time(record.start * 1000, _MS)


def event_point(gateway: str, event: EventRecord, *, prefix: str = "",
                tags: Mapping[str, str] = {}) -> Point:  # noqa: B006 - read-only default
    point = (Point(prefix + "event").tag("gateway", gateway).tag("device", event.device)
             .tag("name", event.name).tag("severity", event.severity))
    if event.metric:
        point.tag("metric", event.metric)
    for key, value in tags.items():
        point.tag(key, value)
    if isinstance(event.value, str):
        point.field("text", event.value)
    elif event.value is not None:
        point.field("value", float(event.value))
    for key, text in (event.detail or {}).items():
        point.field(f"detail_{key}", text)
    if not point._fields:  # noqa: SLF001 - Point has no public "has fields"
        point.field("value", 1.0)  # a line needs one field: the event happened
    return point.time(round(event.ts * 1000), _MS)


def state_point(gateway: str, device: str, metric: str, ts: float, fields: Mapping[str, Any], *,
                prefix: str = "", tags: Mapping[str, str] = {}) -> Point:  # noqa: B006 - read-only default
    """A keyframe (`state` since `ts`) or an end of carry (`carry_ended` from `ts`): states are
    written on change, so these are the only points between a state's changes."""
    point = Point(prefix + metric).tag("gateway", gateway).tag("device", device)
    for key, value in tags.items():
        point.tag(key, value)
    for name, value in fields.items():
        point.field(name, value)
    return point.time(round(ts * 1000), _MS)


def document_lines(document: BatchDocument, *, prefix: str = "",
                   tags: Mapping[str, str] = {}) -> list[bytes]:  # noqa: B006 - read-only default
    """One encoded line per window record, keyframe entry, end of carry and event, in document
    order. A state series has points only where it changed (batch v2), plus its keyframes."""
    gateway = document.gateway
    lines: list[Any] = [
        window_point(gateway, record, prefix=prefix, tags=tags) for record in document.windows
    ]
    lines += [state_point(gateway, k.device, k.metric, k.since, {"state": k.state}, prefix=prefix, tags=tags)
              for k in document.keyframe]
    lines += [state_point(gateway, e.device, e.metric, e.start, {"carry_ended": 1}, prefix=prefix, tags=tags)
              for e in document.ended]
    lines += [event_point(gateway, event, prefix=prefix, tags=tags) for event in document.events]
    return [point.to_line_protocol().encode() for point in lines]
