"""The platform's books: what arrived, what was a duplicate, what is missing.

Sans-I/O: `Ledger.ingest(payload, content_type)` takes one MQTT payload as received; no socket,
no clock. The receiver feeds it from its MQTT client, tests may feed it directly.

Rules (gateway/batch.py, schema/batch-v1.json):
- every payload is validated against the schema; invalid ones are counted with their reason
  and otherwise ignored;
- a batch id seen before is a duplicate batch (at-least-once delivery) and is not counted again;
- window records are kept by key (gateway, device, metric, start); the highest revision wins,
  a repeated (key, revision) is a duplicate window;
- gaps: within one (gateway, stream) the seq numbers start at 1 and have no holes, so every
  number between 1 and the highest seen that never arrived is missing.
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

__all__ = ["Ledger", "load_schema"]

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_INVALID_SAMPLES = 20


@cache
def load_schema() -> dict[str, Any]:
    text = resources.files("gateway").joinpath("schema/batch-v1.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema())


@dataclass
class _Window:
    revision: int
    count: int


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
        self.bytes_received = 0
        # (gateway/stream, seq, carries events) of each new batch, in arrival order
        self.arrivals: list[tuple[str, int, bool]] = []

    # ---------------------------------------------------------------- input

    def ingest(self, payload: bytes | bytearray, content_type: str | None = None,
               topic: str = "") -> bool:
        """Account one batch payload; returns False when it was invalid."""
        with self._lock:
            self.messages += 1
            self.bytes_received += len(payload)
            document = self._parse(payload, content_type, topic)
            if document is None:
                return False
            self._account(document)
            return True

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
        problem = jsonschema.exceptions.best_match(_validator().iter_errors(document))
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path) or "(document)"
            self._invalid(topic, f"schema: {where}: {problem.message}")
            return None
        return document  # type: ignore[no-any-return]

    def _account(self, document: dict[str, Any]) -> None:
        batch_id = document["batch_id"]
        if batch_id in self.batch_ids:
            self.duplicate_batches += 1
            return
        self.batch_ids.add(batch_id)
        gateway = document["gateway"]
        stream = self.streams.setdefault((gateway, document["stream"]), _Stream())
        stream.seqs.add(document["seq"])
        self.arrivals.append((f"{gateway}/{document['stream']}", document["seq"],
                              bool(document.get("events"))))
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
