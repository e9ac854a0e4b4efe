"""The platform's books: what arrived, what was a duplicate, what is missing.

Sans-I/O: `Ledger.ingest(payload, content_type)` takes one MQTT payload as received; no socket,
no clock. The receiver feeds it from its MQTT client, tests may feed it directly.

Rules (gateway/batch.py, schema/batch-v2.json; v1 documents are still read):
- every payload is validated against the schema of its version; invalid ones are counted with
  their reason and otherwise ignored;
- v2 window rows are expanded through the batch's series table here, independently of the
  gateway's own decoder, so a bug there cannot balance these books;
- a batch id seen before is a duplicate batch (at-least-once delivery) and is not counted again;
- window records are kept by key (gateway, device, metric, start); the highest revision wins,
  a repeated (key, revision) is a duplicate window;
- gaps: within one (gateway, stream) the seq numbers start at 1 and have no holes, so every
  number between 1 and the highest seen that never arrived is missing;
- states on change: a state series' windows without a row are spent wholly in the state of its
  previous row, up to an `ended` entry; `state_windows` rebuilds every window of a series.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

__all__ = ["Accounted", "Ledger", "load_schema"]

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_INVALID_SAMPLES = 20


SCHEMA_VERSIONS = (1, 2)
_ROW_FIELDS = {"gauge": ("min", "max", "mean", "last"), "counter": ("first", "last", "delta", "resets"),
               "state": ("last", "transitions", "durations")}


@cache
def load_schema(version: int = 2) -> dict[str, Any]:
    text = resources.files("gateway").joinpath(f"schema/batch-v{version}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(version: int) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(version))


@dataclass
class _Window:
    revision: int
    count: int


@dataclass
class StateWindow:
    """One window of a state series as the platform sees it (a row, or carried through)."""

    start: int
    count: int
    last: Any
    transitions: int
    durations: dict[str, float]


@dataclass
class _StateSeries:
    window: int = 0
    rows: dict[int, tuple[int, StateWindow]] = field(default_factory=dict)  # start -> (revision, row)
    ended: dict[float, int] = field(default_factory=dict)  # since -> first uncarried start
    keyframe: tuple[float, Any] | None = None


def expand_v2(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The window records of a v2 document as v1-shaped dicts."""
    series = document.get("series", [])
    window = document.get("window", 0)
    out = []
    for row in document.get("windows", []):
        device, metric, unit, kind = series[row[0]]
        record: dict[str, Any] = {"device": device, "metric": metric, "unit": unit, "kind": kind,
                                  "start": row[1], "window": window, "count": row[2], "revision": row[3]}
        values = row[4:]
        if kind == "gauge" and len(values) == 1:
            record.update(min=values[0], max=values[0], mean=values[0], last=values[0])
        else:
            record.update(zip(_ROW_FIELDS[kind], values, strict=False))
        out.append(record)
    return out


@dataclass(frozen=True)
class Accounted:
    """A valid batch the books now hold: what an end-to-end acknowledgement names."""

    gateway: str
    stream: str
    seq: int
    new: bool  # False: a duplicate (already accounted under the same batch id)


@dataclass
class _Stream:
    seqs: set[int] = field(default_factory=set)


class Ledger:
    """Thread-safe: the MQTT thread ingests while a test or the CLI reads the report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages = 0
        self.batch_ids: set[str] = set()
        self.duplicate_batches = 0
        self.duplicate_windows = 0
        self.superseded_windows = 0  # older revisions replaced by a newer one
        self.windows: dict[tuple[str, str, str, int], _Window] = {}
        self.streams: dict[tuple[str, str], _Stream] = {}
        self.events: set[tuple[str, str, float, str]] = set()
        self.duplicate_events = 0
        self.invalid = 0
        self.invalid_samples: list[str] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.states: dict[tuple[str, str, str], _StateSeries] = {}
        self.closed: dict[str, int] = {}  # gateway -> highest close boundary announced
        self.bytes_received = 0
        # (gateway/stream, seq, carries events) of each new batch, in arrival order
        self.arrivals: list[tuple[str, int, bool]] = []

    # ---------------------------------------------------------------- input

    def ingest(self, payload: bytes | bytearray, content_type: str | None = None,
               topic: str = "") -> bool:
        """Account one batch payload; returns False when it was invalid."""
        return self.account(payload, content_type, topic) is not None

    def account(self, payload: bytes | bytearray, content_type: str | None = None,
                topic: str = "") -> Accounted | None:
        """Account one batch payload: what it was (new or a duplicate), None when invalid.
        Once this returns, the batch is in the books: the moment to acknowledge it."""
        with self._lock:
            self.messages += 1
            self.bytes_received += len(payload)
            document = self._parse(payload, content_type, topic)
            if document is None:
                return None
            new = self._account(document)
            return Accounted(document["gateway"], document["stream"], document["seq"], new)

    def ingest_status(self, payload: bytes | bytearray, topic: str = "") -> None:
        try:
            status = json.loads(payload)
        except ValueError:
            with self._lock:
                self._invalid(topic, "status payload is not JSON")
            return
        if isinstance(status, dict) and isinstance(status.get("gateway"), str):
            with self._lock:
                self.status[status["gateway"]] = status

    def _invalid(self, topic: str, reason: str) -> None:
        self.invalid += 1
        if len(self.invalid_samples) < _MAX_INVALID_SAMPLES:
            self.invalid_samples.append(f"{topic}: {reason}" if topic else reason)

    def _parse(self, payload: bytes | bytearray, content_type: str | None, topic: str) -> dict[str, Any] | None:
        compressed = (content_type or "").endswith("+gzip") or payload[:2] == _GZIP_MAGIC
        if compressed:
            try:
                payload = gzip.decompress(payload)
            except (OSError, EOFError, zlib.error) as error:
                self._invalid(topic, f"bad gzip: {error}")
                return None
        try:
            document = json.loads(payload)
        except ValueError as error:
            self._invalid(topic, f"not JSON: {error}")
            return None
        version = document.get("version") if isinstance(document, dict) else None
        if version not in SCHEMA_VERSIONS:
            self._invalid(topic, f"schema: unknown version {version!r}")
            return None
        problem = jsonschema.exceptions.best_match(_validator(version).iter_errors(document))
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path) or "(document)"
            self._invalid(topic, f"schema: {where}: {problem.message}")
            return None
        if version == 2:
            try:
                document["windows"] = expand_v2(document)
            except (IndexError, ValueError) as error:
                self._invalid(topic, f"series index: {error}")
                return None
        return document  # type: ignore[no-any-return]

    def _account(self, document: dict[str, Any]) -> bool:
        batch_id = document["batch_id"]
        if batch_id in self.batch_ids:
            self.duplicate_batches += 1
            return False
        self.batch_ids.add(batch_id)
        gateway = document["gateway"]
        stream = self.streams.setdefault((gateway, document["stream"]), _Stream())
        stream.seqs.add(document["seq"])
        self.arrivals.append((f"{gateway}/{document['stream']}", document["seq"],
                              bool(document.get("events"))))
        if document.get("closed"):
            self.closed[gateway] = max(self.closed.get(gateway, document["closed"]), document["closed"])
        self._account_states(gateway, document)
        for record in document.get("windows", ()):
            key = (gateway, record["device"], record["metric"], record["start"])
            revision = record.get("revision", 0)
            known = self.windows.get(key)
            if known is None:
                self.windows[key] = _Window(revision, record["count"])
            elif revision > known.revision:
                self.superseded_windows += 1
                self.windows[key] = _Window(revision, record["count"])
            else:
                self.duplicate_windows += 1
        for event in document.get("events", ()):
            key_e = (gateway, event["device"], float(event["ts"]), event["name"])
            if key_e in self.events:
                self.duplicate_events += 1
            else:
                self.events.add(key_e)
        return True

    def _account_states(self, gateway: str, document: dict[str, Any]) -> None:
        series = document.get("series", [])
        for record in document.get("windows", ()):
            if record["kind"] != "state":
                continue
            books = self.states.setdefault((gateway, record["device"], record["metric"]), _StateSeries())
            books.window = record["window"]
            known = books.rows.get(record["start"])
            if known is None or record.get("revision", 0) > known[0]:
                books.rows[record["start"]] = (record.get("revision", 0), StateWindow(
                    record["start"], record["count"], record["last"], record.get("transitions") or 0,
                    dict(record.get("durations") or {})))
        for index, since, _state, start in document.get("ended", ()):
            device, metric = series[index][0], series[index][1]
            self.states.setdefault((gateway, device, metric), _StateSeries()).ended[since] = start
        for index, since, state in document.get("keyframe", ()):
            device, metric = series[index][0], series[index][1]
            books = self.states.setdefault((gateway, device, metric), _StateSeries())
            if books.keyframe is None or since >= books.keyframe[0]:
                books.keyframe = (since, state)

    def state_windows(self, gateway: str, device: str, metric: str, until: int | None = None) -> list[StateWindow]:
        """Every window of a state series from its first row up to `until` (default: the
        gateway's announced close boundary): rows as received (highest revision), the windows
        between them spent in the previous row's state, up to an end of carry."""
        with self._lock:
            books = self.states.get((gateway, device, metric))
            if books is None or not books.rows:
                return []
            until = self.closed.get(gateway, 0) if until is None else until
            window = books.window
            ends = sorted(books.ended.values())
            out: list[StateWindow] = []
            starts = sorted(books.rows)
            for i, start in enumerate(starts):
                row = books.rows[start][1]
                out.append(row)
                stop = starts[i + 1] if i + 1 < len(starts) else until
                ended = min((e for e in ends if e > start), default=None)
                quiet = start + window
                while quiet < stop and (ended is None or quiet < ended):
                    out.append(StateWindow(quiet, 0, row.last, 0, {str(row.last): float(window)}))
                    quiet += window
            return out

    # ---------------------------------------------------------------- output

    def gaps(self) -> dict[str, list[int]]:
        with self._lock:
            return self._gaps()

    def _gaps(self) -> dict[str, list[int]]:
        result: dict[str, list[int]] = {}
        for (gateway, stream), books in sorted(self.streams.items()):
            highest = max(books.seqs)
            missing = [seq for seq in range(1, highest + 1) if seq not in books.seqs]
            if missing:
                result[f"{gateway}/{stream}"] = missing
        return result

    def readings_covered(self, gateway: str | None = None) -> int:
        with self._lock:
            return sum(w.count for k, w in self.windows.items() if gateway in (None, k[0]))

    def report(self) -> dict[str, Any]:
        with self._lock:
            per_gateway: dict[str, dict[str, int]] = {}
            for (gateway, _device, _metric, _start), window in self.windows.items():
                books = per_gateway.setdefault(gateway, {"window_records": 0, "readings_covered": 0})
                books["window_records"] += 1
                books["readings_covered"] += window.count
            streams = {
                f"{gateway}/{stream}": {"batches": len(b.seqs), "highest_seq": max(b.seqs)}
                for (gateway, stream), b in sorted(self.streams.items())
            }
            return {
                "messages": self.messages,
                "bytes": self.bytes_received,
                "batches": len(self.batch_ids),
                "window_records": len(self.windows),
                "readings_covered": sum(w.count for w in self.windows.values()),
                "events": len(self.events),
                "duplicates": {
                    "batches": self.duplicate_batches,
                    "windows": self.duplicate_windows,
                    "events": self.duplicate_events,
                    "superseded_revisions": self.superseded_windows,
                },
                "gaps": self._gaps(),
                "invalid": {"count": self.invalid, "samples": list(self.invalid_samples)},
                "streams": streams,
                "gateways": per_gateway,
                "status": dict(self.status),
            }
