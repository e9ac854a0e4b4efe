"""Pure parsing of recorded readings (JSON Lines or CSV, optionally gzipped).

A bad record never stops the replay: it comes out as a `ReplayDecodeError` naming its line, and
the driver counts it and plays on.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterator
from typing import Any

import msgspec

from gateway.errors import DecodeError
from gateway.model import CATALOG, Kind

__all__ = ["ReplayDecodeError", "iter_records", "parse_record"]

Row = tuple[str, str, float | str, float]


class ReplayDecodeError(DecodeError):
    def __init__(self, cause: str, detail: str, *, line: int) -> None:
        super().__init__(cause, f"line {line}: {detail}")
        self.line = line


class _Json(msgspec.Struct):
    device: str
    metric: str
    value: float | str
    ts: float


_json = msgspec.json.Decoder(_Json)


def parse_record(device: Any, metric: Any, value: Any, ts: Any, *, line: int) -> Row:
    """Validate one record against the catalog; raises ReplayDecodeError naming the line."""
    if not device or not isinstance(device, str):
        raise ReplayDecodeError("bad_device", f"device must be a non-empty string, found {device!r}", line=line)
    info = CATALOG.get(metric)
    if info is None:
        raise ReplayDecodeError("unknown_metric", f"metric {metric!r} is not in the catalog", line=line)
    try:
        timestamp = float(ts)
    except (TypeError, ValueError):
        raise ReplayDecodeError("bad_timestamp", f"ts must be Unix seconds, found {ts!r}", line=line) from None
    if not math.isfinite(timestamp) or timestamp <= 0:
        raise ReplayDecodeError("bad_timestamp", f"ts must be Unix seconds, found {ts!r}", line=line)
    if info.kind == Kind.STATE:
        if not isinstance(value, str) or not value:
            raise ReplayDecodeError("bad_value", f"{metric} is a state: expected text, found {value!r}", line=line)
        return device, metric, value, timestamp
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ReplayDecodeError("bad_value", f"{metric} expects a number, found {value!r}", line=line) from None
    if not math.isfinite(number):
        raise ReplayDecodeError("bad_value", f"{metric} expects a finite number, found {value!r}", line=line)
    return device, metric, number, timestamp


def _open_text(path: str) -> io.TextIOBase:
    # errors="replace": a line with invalid UTF-8 fails its own validation instead of ending the replay
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_records(path: str) -> Iterator[Row | ReplayDecodeError]:
    """Yield parsed rows, or a ReplayDecodeError in place of each bad line."""
    csv_format = path.removesuffix(".gz").endswith(".csv")
    with _open_text(path) as stream:
        if csv_format:
            yield from _iter_csv(stream)
        else:
            yield from _iter_jsonl(stream)


def _iter_jsonl(stream: io.TextIOBase) -> Iterator[Row | ReplayDecodeError]:
    for number, text in enumerate(stream, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            record = _json.decode(text)
        except msgspec.DecodeError as error:
            yield ReplayDecodeError("bad_json", str(error), line=number)
            continue
        except RecursionError:  # msgspec's own nesting guard: a record is flat, this is garbage
            yield ReplayDecodeError("bad_json", "nested too deep", line=number)
            continue
        try:
            yield parse_record(record.device, record.metric, record.value, record.ts, line=number)
        except ReplayDecodeError as error:
            yield error


def _iter_csv(stream: io.TextIOBase) -> Iterator[Row | ReplayDecodeError]:
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        return
    columns = [h.strip() for h in header]
    want = ("device", "metric", "value", "ts")
    if any(c not in columns for c in want):
        yield ReplayDecodeError("bad_header", f"CSV header must name {', '.join(want)}, found {columns}", line=1)
        return
    idx = [columns.index(c) for c in want]
    for row in reader:
        number = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < len(columns):
            yield ReplayDecodeError("short_row", f"expected {len(columns)} fields, found {len(row)}", line=number)
            continue
        try:
            yield parse_record(*(row[i].strip() for i in idx), line=number)
        except ReplayDecodeError as error:
            yield error
