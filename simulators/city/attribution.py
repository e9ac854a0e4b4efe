"""Which readings an evicted batch took with it, per batch seq and per device.

The gateway names what it evicted by seq range (its outbox's `evictions` table); the gateway
process of a city run with faults also records what every stored window batch covered
(simulators.city.gwproc --stored-log: stream, seq, and per window device, metric, start,
revision and count). Together they say, for each evicted seq, which window keys it held.

An eviction explains, per window key, the readings its batches covered that never reached the
platform otherwise: the highest count an evicted batch held for the key minus the count of the
latest revision the platform has (0 if none). A revision that arrived later covers what the
evicted one did, so it explains nothing there. Summed per device this is the most evictions
may absorb of that device's deficit; nothing else (a reading lost by a crash, in a window no
evicted batch held, stays unexplained). An evicted seq the record does not describe explains
nothing and is listed.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EvictionLoss", "eviction_losses", "read_evicted_ranges", "read_stored_batches"]

WindowKey = tuple[str, str, int]  # device, metric, window start
StoredWindow = tuple[str, str, int, int, int]  # device, metric, start, revision, count


def read_stored_batches(path: Path) -> dict[str, dict[int, list[StoredWindow]]]:
    """stream -> seq -> windows, from the gateway's stored-batch record; the last line of a seq
    wins (a failed commit is retried under the same seq). A line cut short by a SIGKILL is
    skipped: its batch was never committed."""
    out: dict[str, dict[int, list[StoredWindow]]] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.setdefault(entry["stream"], {})[int(entry["seq"])] = [
            (str(d), str(m), int(s), int(r), int(c)) for d, m, s, r, c in entry["windows"]]
    return out


def read_evicted_ranges(database: Path) -> tuple[str, list[tuple[int, int]]]:
    """(stream, [(first_seq, last_seq), ...]) the stopped gateway's outbox says it evicted."""
    if not database.exists():
        return "", []
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        stream = db.execute("SELECT value FROM meta WHERE key = 'stream'").fetchone()
        ranges = [(int(a), int(b)) for a, b in db.execute("SELECT first_seq, last_seq FROM evictions ORDER BY first_seq")]
    finally:
        db.close()
    return (str(stream[0]) if stream else ""), ranges


@dataclass
class EvictionLoss:
    """What evictions explain: per device, and per evicted seq (device -> readings)."""

    ranges: list[tuple[int, int]] = field(default_factory=list)  # the seq ranges the gateway evicted
    by_device: Counter[str] = field(default_factory=Counter)
    by_seq: dict[int, dict[str, int]] = field(default_factory=dict)
    evicted_seqs: int = 0
    undescribed_seqs: list[int] = field(default_factory=list)  # evicted, but no record of their content

    def as_report(self) -> dict[str, object]:
        return {
            "ranges": self.ranges,
            "evicted_seqs": self.evicted_seqs,
            "readings": sum(self.by_device.values()),
            "by_seq": {str(seq): dict(sorted(devices.items())) for seq, devices in sorted(self.by_seq.items())},
            "undescribed_seqs": self.undescribed_seqs,
        }


def eviction_losses(
    stored: dict[int, list[StoredWindow]],
    evicted: list[tuple[int, int]],
    covered: dict[WindowKey, int],
    *,
    skip_metrics: frozenset[str] = frozenset(),
) -> EvictionLoss:
    """Readings the evicted seqs covered and the platform has not, per device and per seq (the
    module docstring gives the rule). `covered` is the platform's count per window key."""
    loss = EvictionLoss(ranges=list(evicted))
    holder: dict[WindowKey, tuple[int, int]] = {}  # key -> (highest count evicted, the seq holding it)
    for first, last in evicted:
        for seq in range(first, last + 1):
            loss.evicted_seqs += 1
            windows = stored.get(seq)
            if windows is None:
                loss.undescribed_seqs.append(seq)
                continue
            for device, metric, start, _revision, count in windows:
                if metric in skip_metrics:
                    continue
                key = (device, metric, start)
                if count > holder.get(key, (-1, 0))[0]:
                    holder[key] = (count, seq)
    for key, (count, seq) in holder.items():
        missing = count - covered.get(key, 0)
        if missing > 0:
            device = key[0]
            loss.by_device[device] += missing
            per_seq = loss.by_seq.setdefault(seq, {})
            per_seq[device] = per_seq.get(device, 0) + missing
    return loss
