"""Pure parsing of recorded readings (JSON Lines or CSV, optionally gzipped).

A bad record never stops the replay: it comes out as a `ReplayDecodeError` naming its line, and
the driver counts it and plays on. A file that cannot be read to its end (a gzip file cut short
while a logger's upload is still being copied, a damaged member) ends with one
`unreadable_file` error after the rows before the break: raised, it would restart the driver,
which plays the file again from its first line, every row before the break again each time.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from collections.abc import Iterable, Iterator
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


class _Lines:
    """The stream's lines, up to the first read error (kept in `failure`) instead of raising."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream = stream
        self.count = 0
        self.failure = ""

    def __iter__(self) -> Iterator[str]:
        try:
            for line in self.stream:
                self.count += 1
                yield line
        except (EOFError, OSError, zlib.error) as error:  # gzip cut short, bad CRC, not gzip at all
            self.failure = f"{type(error).__name__}: {error}"


def iter_records(path: str) -> Iterator[Row | ReplayDecodeError]:
    """Yield parsed rows, or a ReplayDecodeError in place of each bad line. Opening the file may
    raise (it may not be there yet); reading it never does."""
    csv_format = path.removesuffix(".gz").endswith(".csv")
    with _open_text(path) as stream:
        lines = _Lines(stream)
        yield from (_iter_csv(lines) if csv_format else _iter_jsonl(lines))
        if lines.failure:
            yield ReplayDecodeError("unreadable_file", f"reading stopped after line {lines.count}: {lines.failure}",
                                    line=lines.count + 1)


def _iter_jsonl(stream: Iterable[str]) -> Iterator[Row | ReplayDecodeError]:
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


def _iter_csv(stream: Iterable[str]) -> Iterator[Row | ReplayDecodeError]:
    reader = csv.reader(stream)
    try:
        header = next(reader, None)
    except csv.Error as error:
        yield ReplayDecodeError("bad_header", str(error), line=reader.line_num)
        return
    if header is None:
        return
    columns = [h.strip() for h in header]
    want = ("device", "metric", "value", "ts")
    if any(c not in columns for c in want):
        yield ReplayDecodeError("bad_header", f"CSV header must name {', '.join(want)}, found {columns}", line=1)
        return
    idx = [columns.index(c) for c in want]
    for row in _rows(reader):
        number = reader.line_num
        if isinstance(row, ReplayDecodeError):
            yield row
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < len(columns):
            yield ReplayDecodeError("short_row", f"expected {len(columns)} fields, found {len(row)}", line=number)
            continue
        try:
            yield parse_record(*(row[i].strip() for i in idx), line=number)
        except ReplayDecodeError as error:
            yield error


def _rows(reader: Any) -> Iterator[list[str] | ReplayDecodeError]:
    """The reader's rows; a line the csv module refuses (a field over its 128 KiB limit, an
    unclosed quote at the end) becomes an error for that line and reading goes on."""
    while True:
        before = reader.line_num
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield ReplayDecodeError("bad_line", str(error), line=reader.line_num)
            if reader.line_num == before:  # nothing consumed: it would refuse the same line again
                return
            continue
        yield row
