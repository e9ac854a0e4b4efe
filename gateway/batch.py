"""The batch document sent to the platform: version 2, described by `schema/batch-v2.json`.

In memory a batch is a `BatchDocument` of `WindowRecord`s (one per window of one series). On the
wire and in the outbox it is compact by construction (README, "The batch format"):
- a series table `[device, metric, unit, kind]`, referenced by index from each window row;
- a window row is an array: `[series, start, count, revision, values...]`, the values by kind
  (`ROW_FIELDS`); a gauge window with a single reading carries that one value;
- state series are reported on change: a window has a state row only when a reading arrived in
  it. `keyframe` lists the current state of every carried series (first batch after start, then
  every `keyframe_interval`), `ended` says when a carried state stops covering windows;
- the document is gzip-compressed (RFC 1952), readable from any language.

The platform removes duplicates by `batch_id` and by window key (gateway, device, metric, start)
with the highest `revision`, and detects loss by gaps in `seq` within one `stream` (a stream is
one outbox database; a new database starts a new stream at seq 1). Version 1 documents (one JSON
object per window record, uncompressed) are still decoded, for outboxes written before v2.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any, Final, Literal

import msgspec

__all__ = [
    "ENCODING",
    "ROW_FIELDS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "Batch",
    "BatchDecodeError",
    "BatchDocument",
    "CarryEndRecord",
    "EventRecord",
    "KeyframeRecord",
    "WindowRecord",
    "decode_document",
    "encode_document",
    "inflate",
    "to_wire",
]

SCHEMA_NAME: Final = "edge-gateway/batch"
SCHEMA_VERSION: Final = 2
# Content coding of stored and sent payloads (MQTT 5 content type "application/json+gzip").
ENCODING: Final = "gzip"
# What follows [series, start, count, revision] in a window row, by kind. A gauge row with
# count 1 holds only "value" (min = max = mean = last).
ROW_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "gauge": ("min", "max", "mean", "last"),
    "counter": ("first", "last", "delta", "resets"),
    "state": ("last", "transitions", "durations"),
}
_GZIP_MAGIC: Final = b"\x1f\x8b"
# A payload that inflates past this is refused (a batch holds at most a few MB of JSON).
_MAX_INFLATED: Final = 64 * 1024 * 1024


class BatchDecodeError(ValueError):
    """A payload that is not a batch document of a known version."""


class WindowRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One window of one metric of one device. Which value fields are present depends on kind."""

    device: str
    metric: str
    unit: str
    kind: Literal["gauge", "counter", "state"]
    start: int  # window start, Unix seconds UTC, a multiple of `window`
    window: int  # window length in seconds
    count: int  # readings aggregated: the platform's measure of coverage
    revision: int = 0  # 0 when first closed, +1 for each late update of the same window
    # gauge
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    # gauge, counter and state: the value of the latest reading by event time
    last: float | str | None = None
    # counter
    first: float | None = None
    delta: float | None = None  # increase over the window, never negative
    resets: int | None = None  # resets or wraps seen inside the window
    # state
    transitions: int | None = None
    durations: dict[str, float] | None = None  # seconds spent in each state inside the window


class KeyframeRecord(msgspec.Struct, kw_only=True):
    """The current state of a carried state series: `state` since its reading at `since`."""

    device: str
    metric: str
    unit: str
    since: float
    state: float | str


class CarryEndRecord(msgspec.Struct, kw_only=True):
    """A carried state stops covering windows from `start` on (no reading for STATE_CARRY)."""

    device: str
    metric: str
    unit: str
    since: float  # event time of the last reading
    state: float | str
    start: int  # first window start no longer in that state


class EventRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    device: str
    ts: float
    name: str
    severity: str
    metric: str | None = None
    value: float | str | None = None
    detail: dict[str, str] | None = None


class BatchDocument(msgspec.Struct, omit_defaults=True, kw_only=True):
    schema: str
    version: int
    gateway: str
    stream: str
    seq: int
    batch_id: str
    created: float  # Unix seconds when the gateway made the batch
    windows: list[WindowRecord] = msgspec.field(default_factory=list)
    events: list[EventRecord] = msgspec.field(default_factory=list)
    keyframe: list[KeyframeRecord] = msgspec.field(default_factory=list)
    ended: list[CarryEndRecord] = msgspec.field(default_factory=list)
    # every window starting before this had closed when the batch was made (0: not said)
    closed: int = 0


class Batch(msgspec.Struct, kw_only=True):
    """A batch as the outbox hands it to an uplink: its identity and its encoded document."""

    seq: int
    kind: Literal["windows", "events"]
    payload: bytes  # the encoded document (gzip, see ENCODING)
    records: int  # window records or events inside
    created: float = 0.0  # when the gateway made it (its windows had just closed), Unix seconds

    def document(self) -> BatchDocument:
        return decode_document(self.payload)

    def json(self) -> bytes:
        """The document's JSON text (the payload inflated)."""
        return inflate(self.payload)


def _compact(value: float | str | None) -> float | str | None:
    # 10 significant digits: float noise (0.30000000000000004) costs bytes and means nothing
    if isinstance(value, float):
        return float(f"{value:.10g}")
    return value


def to_wire(document: BatchDocument) -> dict[str, Any]:
    """The v2 JSON object of `document` (before compression)."""
    series: list[list[Any]] = []
    index: dict[tuple[str, str, str, str], int] = {}

    def ref(device: str, metric: str, unit: str, kind: str) -> int:
        key = (device, metric, unit, kind)
        found = index.get(key)
        if found is None:
            found = index[key] = len(series)
            series.append([device, metric, unit, kind])
        return found

    window = document.windows[0].window if document.windows else 0
    rows: list[list[Any]] = []
    for record in document.windows:
        if record.window != window:
            raise ValueError("one batch holds windows of one length")
        row: list[Any] = [ref(record.device, record.metric, record.unit, record.kind), record.start,
                          record.count, record.revision]
        if record.kind == "gauge" and record.count == 1:
            row.append(_compact(record.last))
        else:
            row.extend(_compact(getattr(record, name)) for name in ROW_FIELDS[record.kind])
        rows.append(row)
    wire: dict[str, Any] = {
        "schema": document.schema, "version": SCHEMA_VERSION, "gateway": document.gateway,
        "stream": document.stream, "seq": document.seq, "batch_id": document.batch_id,
        "created": document.created,
    }
    if document.closed:
        wire["closed"] = document.closed
    if rows:
        wire["window"] = window
    if document.keyframe:
        wire["keyframe"] = [[ref(k.device, k.metric, k.unit, "state"), k.since, k.state]
                            for k in document.keyframe]
    if document.ended:
        wire["ended"] = [[ref(e.device, e.metric, e.unit, "state"), e.since, e.state, e.start]
                         for e in document.ended]
    if series:
        wire["series"] = series
    if rows:
        wire["windows"] = rows
    if document.events:
        wire["events"] = [msgspec.to_builtins(e) for e in document.events]
    return wire


_json_encoder = msgspec.json.Encoder()


def encode_document(document: BatchDocument, *, compress: bool = True) -> bytes:
    """The stored and sent form: one line of JSON (newline-terminated, so gzip members
    appended to a file inflate to JSON Lines), gzip-compressed unless `compress` is off."""
    text = _json_encoder.encode(to_wire(document)) + b"\n"
    if not compress:
        return text
    # gzip with mtime 0: the same document always gives the same bytes
    return gzip.compress(text, compresslevel=6, mtime=0)


def inflate(payload: bytes) -> bytes:
    """The JSON text of a stored or received payload, gzip or not."""
    if payload[:2] != _GZIP_MAGIC:
        return payload
    try:
        inflater = zlib.decompressobj(wbits=31)
        text = inflater.decompress(payload, _MAX_INFLATED)
    except zlib.error as error:
        raise BatchDecodeError(f"bad gzip: {error}") from error
    if inflater.unconsumed_tail:
        raise BatchDecodeError(f"inflates past {_MAX_INFLATED} bytes")
    return text


_v1_decoder = msgspec.json.Decoder(BatchDocument)


def decode_document(payload: bytes) -> BatchDocument:
    """Decode a v2 (or v1) payload into the in-memory document."""
    text = inflate(payload)
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        raise BatchDecodeError(f"not JSON: {error}") from error
    except RecursionError:  # msgspec's own nesting guard; a batch nests four levels at most
        raise BatchDecodeError("not a batch: nested too deep") from None
    if not isinstance(raw, dict):
        raise BatchDecodeError("not a JSON object")
    version = raw.get("version")
    if version == 1:
        try:
            return _v1_decoder.decode(text)
        except msgspec.ValidationError as error:
            raise BatchDecodeError(f"v1: {error}") from error
    if version != SCHEMA_VERSION:
        raise BatchDecodeError(f"unknown batch version {version!r}")
    try:
        return _from_wire(raw)
    except (KeyError, IndexError, TypeError, ValueError, msgspec.ValidationError) as error:
        raise BatchDecodeError(f"v2: {type(error).__name__}: {error}") from error


def _from_wire(raw: dict[str, Any]) -> BatchDocument:
    series = raw.get("series", [])
    window = raw.get("window", 0)
    records = []
    for row in raw.get("windows", []):
        device, metric, unit, kind = series[row[0]]
        fields: dict[str, Any] = {"device": device, "metric": metric, "unit": unit, "kind": kind,
                                  "start": row[1], "window": window, "count": row[2], "revision": row[3]}
        values = row[4:]
        if kind == "gauge" and len(values) == 1:
            fields.update(min=values[0], max=values[0], mean=values[0], last=values[0])
        else:
            names = ROW_FIELDS[kind]
            if len(values) != len(names):
                raise ValueError(f"a {kind} row has {len(names)} values, found {len(values)}")
            fields.update(zip(names, values, strict=True))
        records.append(msgspec.convert(fields, WindowRecord))
    keyframe = [
        KeyframeRecord(device=series[s][0], metric=series[s][1], unit=series[s][2], since=since, state=state)
        for s, since, state in raw.get("keyframe", [])
    ]
    ended = [
        CarryEndRecord(device=series[s][0], metric=series[s][1], unit=series[s][2], since=since,
                       state=state, start=start)
        for s, since, state, start in raw.get("ended", [])
    ]
    events = [msgspec.convert(e, EventRecord) for e in raw.get("events", [])]
    return BatchDocument(
        schema=raw["schema"], version=raw["version"], gateway=raw["gateway"], stream=raw["stream"],
        seq=raw["seq"], batch_id=raw["batch_id"], created=raw["created"], windows=records,
        events=events, keyframe=keyframe, ended=ended, closed=raw.get("closed", 0),
    )
