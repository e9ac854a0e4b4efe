"""The batch document sent to the platform (version 1), described by `schema/batch-v1.json`.

A batch carries closed window records (and revisions of late windows) or priority events. The
platform removes duplicates by `batch_id` and by window key (gateway, device, metric, start) with
the highest `revision`, and detects loss by gaps in `seq` within one `stream` (a stream is one
outbox database; a new database starts a new stream at seq 1).
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "Batch",
    "BatchDocument",
    "EventRecord",
    "WindowRecord",
    "decode_document",
    "encode_document",
]

SCHEMA_NAME: Final = "edge-gateway/batch"
SCHEMA_VERSION: Final = 1


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


class Batch(msgspec.Struct, kw_only=True):
    """A batch as the outbox hands it to an uplink: its identity and its encoded document."""

    seq: int
    kind: Literal["windows", "events"]
    payload: bytes  # the JSON document, uncompressed
    records: int  # window records or events inside

    def document(self) -> BatchDocument:
        return decode_document(self.payload)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(BatchDocument)


def encode_document(document: BatchDocument) -> bytes:
    return _encoder.encode(document)


def decode_document(payload: bytes) -> BatchDocument:
    return _decoder.decode(payload)
