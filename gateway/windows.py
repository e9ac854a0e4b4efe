"""Event-time tumbling windows: the gateway's hot loop (design.md, Windows).

Windows are aligned to multiples of `window` seconds in UTC. A window closes when the wall clock
passes its end plus `grace`. A reading for a window that is already closed, arriving at most
`max_lateness` seconds after the window's end, becomes a *late partial*: the outbox merges it
with the stored aggregate of that window and emits a revision (same key, revision + 1, merged
values). Older readings are dropped and counted, and so are readings stamped further in the
future than `FUTURE_TOLERANCE` (a device with a wrong clock must not hold windows open).

Accumulators are plain lists, one per (device, metric, window start), so the per-reading path
allocates nothing but the series key:

    gauge:          [GAUGE, count, min, max, sum, last, last_ts, dirty]
    counter, state: [kind,  count, points, prior, dirty]   points = [[ts, value], ...]

Gauges fold each reading in as it comes (order cannot change count/min/max/sum, and `last` is
the value with the greatest event time, ties broken by the value's text). Counters and states keep their points and are resolved
when the window is finalised, so any arrival order gives the same record. A state series carries
its last state into the next window (`prior`): the seconds before the window's first reading
count for that state. A window with no reading of a state series gets no record at all (batch
v2 reports states on change): the platform carries the last state through quiet windows, for up
to `STATE_CARRY` seconds after the last reading, and the aggregator hands over one explicit
end-of-carry entry when that limit passes (a connector reports its status only on change). A
counter carries its last value the same way, so a window's delta includes the step from the
previous reading (one meter reading per window still gives the energy of each window). Closing
therefore walks only the windows that hold readings, never every carried series per window.
Revisions of later windows after a late reading are `gateway.revisions`' job.

`dirty` marks accumulators changed since the last checkpoint, so a checkpoint writes only what
changed: the SD card sees bytes proportional to readings, not to open series.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.batch import WindowRecord
from gateway.metrics import PREFIX
from gateway.model import CATALOG, Kind, Reading, extra_metric

assert (int(Kind.GAUGE), int(Kind.COUNTER), int(Kind.STATE)) == (0, 1, 2), "tags below mirror Kind"

__all__ = [
    "FUTURE_TOLERANCE",
    "STATE_CARRY",
    "Aggregator",
    "CarryEnd",
    "CloseResult",
    "SeriesKey",
    "WindowMetrics",
    "WindowStats",
    "finalize",
    "is_gauge",
    "is_state",
    "last_point",
    "merge",
    "point_order",
    "points_of",
    "prior_of",
    "quiet_state",
    "reading_count",
    "set_prior",
]

GAUGE: Final = 0
COUNTER: Final = 1
STATE: Final = 2
_KIND_NAMES: Final = ("gauge", "counter", "state")

# gauge slots
G_COUNT, G_MIN, G_MAX, G_SUM, G_LAST, G_LAST_TS, G_DIRTY = 1, 2, 3, 4, 5, 6, 7
# counter/state slots
P_COUNT, P_POINTS, P_PRIOR, P_DIRTY = 1, 2, 3, 4

# A device clock may run this far ahead of the gateway's before its readings are refused.
FUTURE_TOLERANCE: Final = 300.0
# A state is carried into windows without readings for this long after its last reading.
STATE_CARRY: Final = 86400.0

SeriesKey = tuple[str, str]
# (window start, (device, metric), accumulator)
Closed = tuple[int, SeriesKey, list[Any]]
# A carried state that reached STATE_CARRY: (series, ts of its last reading, that state, start of
# the first window it no longer covers).
CarryEnd = tuple[SeriesKey, float, Any, int]


class WindowStats:
    __slots__ = ("accepted", "closed", "future_dropped", "late_accepted", "late_dropped", "unknown_metric")

    def __init__(self) -> None:
        self.accepted = 0
        self.closed = 0
        self.late_accepted = 0
        self.late_dropped = 0
        self.future_dropped = 0
        self.unknown_metric = 0


class WindowMetrics:
    """The windows' figures on `/metrics`: windows closed, late readings accepted or dropped,
    readings refused (future, unknown metric), open accumulators. Read at scrape time from the
    aggregator's integers, never counted twice."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    def collect(self) -> Iterator[Metric]:
        stats = self.aggregator.stats
        for name, text, value in (
            ("windows_closed", "Windows closed (first revision)", stats.closed),
            ("late_accepted", "Readings for closed windows within max_lateness", stats.late_accepted),
            ("late_dropped", "Readings older than max_lateness, dropped", stats.late_dropped),
            ("future_dropped", "Readings too far ahead of the gateway clock, dropped", stats.future_dropped),
            ("unknown_metric_dropped", "Readings of metrics outside the catalog", stats.unknown_metric),
        ):
            yield CounterMetricFamily(PREFIX + name, text, value=value)
        yield GaugeMetricFamily(PREFIX + "open_series", "Open window accumulators", value=self.aggregator.open_series)


class CloseResult:
    """What one close step hands to the outbox: accumulators detached from the aggregator."""

    __slots__ = ("closed", "closed_before", "ended", "late", "late_priors")

    def __init__(
        self,
        closed: list[Closed],
        late: list[Closed],
        closed_before: int,
        ended: list[CarryEnd] | None = None,
        late_priors: dict[SeriesKey, list[Any] | None] | None = None,
    ) -> None:
        self.closed = closed
        self.late = late
        self.closed_before = closed_before
        self.ended = ended if ended is not None else []
        # what was carried for each late counter/state series before its late readings: the
        # reading before a late window when the store no longer holds one (a long-stable state)
        self.late_priors = late_priors if late_priors is not None else {}

    def __bool__(self) -> bool:
        return bool(self.closed or self.late or self.ended)


# Catalog kinds: the hot path's lookup. A miss (a metric outside the catalog) falls back to the
# per-process registry of configured and forwarded metrics (`_extra_kind`), which runs once per
# new accumulator of such a metric, never for catalog metrics.
_KIND_OF: Final[dict[str, int]] = {name: int(m.kind) for name, m in CATALOG.items()}


def _extra_kind(metric: str) -> int | None:
    row = extra_metric(metric)
    return None if row is None else int(row.kind)


def _kind_of(metric: str) -> int | None:
    kind = _KIND_OF.get(metric)
    return _extra_kind(metric) if kind is None else kind


def _new_acc(kind: int, value: Any, ts: float) -> list[Any]:
    if kind == GAUGE:
        return [GAUGE, 1, value, value, value, value, ts, True]
    return [kind, 1, [[ts, value]], None, True]


class Aggregator:
    """Assigns readings to event-time windows; not thread-safe (runs on the event loop)."""

    def __init__(
        self,
        *,
        window: int = 60,
        grace: float = 10.0,
        max_lateness: float = 3600.0,
        now: float | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1 s")
        self.window = int(window)
        self.grace = float(grace)
        self.max_lateness = float(max_lateness)
        self.stats = WindowStats()
        self.metrics = WindowMetrics(self)
        # window start -> series -> accumulator
        self._open: dict[int, dict[SeriesKey, list[Any]]] = {}
        self._late: dict[int, dict[SeriesKey, list[Any]]] = {}
        # every window starting before this has closed (monotonic: a clock stepping back does
        # not reopen windows; their readings become revisions).
        self._closed_before = -(2**62)
        self._now = 0.0
        # counter/state series -> (ts, value) of the last reading of a closed window
        self._carry: dict[SeriesKey, tuple[float, Any]] = {}
        # carried series changed (or gone) since the last checkpoint: the outbox writes only these
        self._carry_changed: set[SeriesKey] = set()
        # ends of carry from a gap in the gateway's own time, handed over with the next close
        self._gap_ended: list[CarryEnd] = []
        if now is not None:
            self.advance(now)

    # -- the hot path -----------------------------------------------------------------------

    def add(self, reading: Reading) -> None:
        """Fold one reading into its window. Cost matters: see benchmarks/windows.py."""
        ts = reading.ts
        window = self.window
        start = int(ts // window) * window
        bucket = self._open.get(start)
        if bucket is None:
            bucket = self._bucket_for(start, ts)
            if bucket is None:
                return
        key = (reading.device, reading.metric)
        acc = bucket.get(key)
        value = reading.value
        if acc is None:
            kind = _KIND_OF.get(reading.metric)
            if kind is None:
                kind = _extra_kind(reading.metric)
                if kind is None:
                    self.stats.unknown_metric += 1
                    return
            bucket[key] = _new_acc(kind, value, ts)
        elif not acc[0]:  # GAUGE is 0: a truth test, no global lookup on the hot path
            acc[1] += 1
            if value < acc[2]:
                acc[2] = value
            elif value > acc[3]:
                acc[3] = value
            acc[4] += value
            last_ts = acc[6]
            if ts > last_ts or (ts == last_ts and str(value) > str(acc[5])):
                acc[5] = value
                acc[6] = ts
            acc[7] = True
        else:
            acc[1] += 1
            acc[2].append([ts, value])
            acc[4] = True
        self.stats.accepted += 1

    def add_many(self, rows: Iterable[tuple[str, str, Any, float]]) -> None:
        """Batch path: (device, metric, value, ts) tuples, e.g. a logger's backfill or a decoded
        multi-reading frame. Same semantics as `add`, with the window lookup cached across
        consecutive rows of the same window and the kind lookups hoisted."""
        window = self.window
        open_windows = self._open
        kind_of = _KIND_OF
        stats = self.stats
        if not isinstance(rows, Sequence):
            rows = list(rows)
        skipped = 0
        # the cached open window [cur_start, cur_end); an empty range until one is cached
        cur_start = cur_end = 0.0
        bucket: dict[SeriesKey, list[Any]] | None = None
        for device, metric, value, ts in rows:
            if not cur_start <= ts < cur_end:
                start = int(ts // window) * window
                bucket = open_windows.get(start)
                if bucket is None:
                    bucket = self._bucket_for(start, ts)
                    if bucket is None:
                        cur_start = cur_end = 0.0
                        skipped += 1
                        continue
                # only cache open windows: late buckets are per-row decisions
                if open_windows.get(start) is bucket:
                    cur_start, cur_end = start, start + window
                else:
                    cur_start = cur_end = 0.0
            key = (device, metric)
            acc = bucket.get(key)  # type: ignore[union-attr]
            if acc is None:
                kind = kind_of.get(metric)
                if kind is None:
                    kind = _extra_kind(metric)
                    if kind is None:
                        stats.unknown_metric += 1
                        skipped += 1
                        continue
                bucket[key] = _new_acc(kind, value, ts)  # type: ignore[index]
            elif not acc[0]:  # GAUGE
                acc[1] += 1
                if value < acc[2]:
                    acc[2] = value
                elif value > acc[3]:
                    acc[3] = value
                acc[4] += value
                last_ts = acc[6]
                if ts > last_ts or (ts == last_ts and str(value) > str(acc[5])):
                    acc[5] = value
                    acc[6] = ts
                acc[7] = True
            else:
                acc[1] += 1
                acc[2].append([ts, value])
                acc[4] = True
        stats.accepted += len(rows) - skipped

    def _bucket_for(self, start: int, ts: float) -> dict[SeriesKey, list[Any]] | None:
        """Slow path: a window not open yet, a closed window (late), or out of range."""
        if start >= self._closed_before:
            if ts > self._now + FUTURE_TOLERANCE and self._now > 0:
                self.stats.future_dropped += 1
                return None
            bucket: dict[SeriesKey, list[Any]] = {}
            self._open[start] = bucket
            return bucket
        if start + self.window + self.max_lateness < self._now:
            self.stats.late_dropped += 1
            return None
        self.stats.late_accepted += 1
        late = self._late.get(start)
        if late is None:
            late = self._late[start] = {}
        return late

    # -- closing ----------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Move the wall clock the aggregator judges lateness by, without closing anything."""
        if now > self._now:
            self._now = now

    def close_due(self, now: float) -> CloseResult:
        """Close every window whose end + grace <= now; hand over late partials."""
        self.advance(now)
        previous = self._closed_before
        boundary = int((self._now - self.grace) // self.window) * self.window
        if boundary > self._closed_before:
            self._closed_before = boundary
        return self._take(previous)

    def flush_all(self) -> CloseResult:
        """Close every open window now (end of a bounded run, tests)."""
        previous = self._closed_before
        if self._open:
            self._closed_before = max(self._closed_before, max(self._open) + self.window)
        return self._take(previous)

    def _take(self, previous: int) -> CloseResult:
        """Close the open windows below the boundary in time order, so each counter and state
        carries into its next window with readings. Quiet windows cost nothing here."""
        boundary = self._closed_before
        carry = self._carry
        changed = self._carry_changed
        # late readings first: a late counter or state reading newer than the carried one is
        # what the windows closing now start from (gateway.revisions revises closed ones)
        late: list[Closed] = []
        late_priors: dict[SeriesKey, list[Any] | None] = {}
        for late_start in sorted(self._late):
            for key, acc in self._late[late_start].items():
                late.append((late_start, key, acc))
                if acc[0] != GAUGE:
                    newest = max(acc[P_POINTS], key=point_order)
                    carried = carry.get(key)
                    if key not in late_priors:
                        late_priors[key] = list(carried) if carried is not None else None
                    if carried is None or point_order(newest) > (carried[0], str(carried[1])):
                        carry[key] = (newest[0], newest[1])
                        changed.add(key)
        self._late = {}
        closed: list[Closed] = []
        for start in sorted(s for s in self._open if s < boundary):
            for key, acc in self._open.pop(start).items():
                if acc[0] != GAUGE:
                    prior = carry.get(key)
                    if prior is not None and prior[0] < start:
                        acc[P_PRIOR] = [prior[0], prior[1]]
                        acc[P_DIRTY] = True  # the stored row must carry its prior for revisions
                    last = max(acc[P_POINTS], key=point_order)
                    carry[key] = (last[0], last[1])
                    changed.add(key)
                closed.append((start, key, acc))
        ended = self._expire_carry(boundary) if boundary > previous else []
        if self._gap_ended:
            ended = self._gap_ended + ended
            self._gap_ended = []
        self.stats.closed += len(closed)
        return CloseResult(closed, late, boundary, ended, late_priors)

    def _expire_carry(self, boundary: int) -> list[CarryEnd]:
        """Forget carried values whose last reading is STATE_CARRY old. A state series gets one
        end-of-carry entry naming the first window its state no longer covers: a window is
        carried while its end is at most STATE_CARRY after the last reading."""
        window = self.window
        ended: list[CarryEnd] = []
        for key, (ts, value) in list(self._carry.items()):
            # first aligned start s with s + window > ts + STATE_CARRY
            first_uncovered = (int((ts + STATE_CARRY - window) // window) + 1) * window
            if first_uncovered >= boundary:
                continue
            del self._carry[key]
            self._carry_changed.add(key)
            if _kind_of(key[1]) == STATE:
                ended.append((key, ts, value, first_uncovered))
        return ended

    def end_carry_at_gap(self, first_unknown: int) -> int:
        """The gateway was not running (or its clock stepped forward) from window
        `first_unknown` on: what a carried state did in that time is unknown, so each carried
        state series gets one end of carry there instead of being reported through the gap
        (nothing fabricated, and one entry per series however long the gap). Counters keep
        their value: the register's increase over the gap shows in the next window's delta.
        Returns the number of series ended."""
        ended = 0
        for key, (ts, value) in list(self._carry.items()):
            if _kind_of(key[1]) != STATE or ts >= first_unknown:
                continue
            del self._carry[key]
            self._carry_changed.add(key)
            self._gap_ended.append((key, ts, value, first_unknown))
            ended += 1
        return ended

    # -- checkpoint and restore -------------------------------------------------------------

    def dirty_open(self) -> list[Closed]:
        """Open accumulators changed since the last call (for the checkpoint); marks them clean."""
        out: list[Closed] = []
        for start, bucket in self._open.items():
            for key, acc in bucket.items():
                slot = G_DIRTY if acc[0] == GAUGE else P_DIRTY
                if acc[slot]:
                    acc[slot] = False
                    out.append((start, key, acc))
        return out

    def mark_all_dirty(self) -> None:
        """The next checkpoint writes every open accumulator (after held checkpoints were
        dropped while the disk refused writes)."""
        for bucket in self._open.values():
            for acc in bucket.values():
                acc[G_DIRTY if acc[0] == GAUGE else P_DIRTY] = True

    def restore(
        self, closed_before: int, open_rows: Iterable[Closed], carry: Iterable[tuple[SeriesKey, float, Any]] = ()
    ) -> int:
        """Resume after a restart from the checkpoint: open accumulators and the close boundary."""
        if closed_before > self._closed_before:
            self._closed_before = closed_before
        n = 0
        for start, key, acc in open_rows:
            acc[G_DIRTY if acc[0] == GAUGE else P_DIRTY] = False
            self._open.setdefault(start, {})[key] = acc
            n += 1
        for key, ts, value in carry:
            self._carry[key] = (ts, value)
        return n

    def carried_states(self) -> list[tuple[SeriesKey, float, Any]]:
        """Every carried state series with its last reading: the content of a keyframe."""
        return [
            (key, ts, value) for key, (ts, value) in self._carry.items() if _kind_of(key[1]) == STATE
        ]

    def carry_changes(self) -> list[tuple[SeriesKey, float | None, Any]]:
        """Carried values changed since the last call, (key, None, None) for a forgotten one;
        marks them written (for the checkpoint)."""
        out: list[tuple[SeriesKey, float | None, Any]] = []
        for key in self._carry_changed:
            carried = self._carry.get(key)
            out.append((key, carried[0], carried[1]) if carried is not None else (key, None, None))
        self._carry_changed = set()
        return out

    @property
    def open_series(self) -> int:
        # a copy of the window list: a scrape reads this off the event loop's thread
        return sum(len(b) for b in list(self._open.values()))

    @property
    def closed_before(self) -> int:
        return self._closed_before


def is_gauge(acc: list[Any]) -> bool:
    return bool(acc[0] == GAUGE)


def is_state(acc: list[Any]) -> bool:
    return bool(acc[0] == STATE)


def reading_count(acc: list[Any]) -> int:
    return int(acc[1])


def points_of(acc: list[Any]) -> list[list[Any]]:
    """A counter's or state's readings in the window, [[ts, value], ...] in arrival order."""
    return acc[P_POINTS]  # type: ignore[no-any-return]


def prior_of(acc: list[Any]) -> list[Any] | None:
    """The [ts, value] a counter or state window starts from: the series' reading before it."""
    return acc[P_PRIOR]  # type: ignore[no-any-return]


def set_prior(acc: list[Any], prior: list[Any] | None) -> None:
    acc[P_PRIOR] = prior
    acc[P_DIRTY] = True


def quiet_state(prior: list[Any]) -> list[Any]:
    """The accumulator of a state window without readings, spent wholly in `prior`'s state."""
    return [STATE, 0, [], prior, False]


def last_point(acc: list[Any]) -> list[Any] | None:
    """The newest reading a counter or state accumulator knows: its own, else its prior."""
    if acc[P_POINTS]:
        newest = max(acc[P_POINTS], key=point_order)
        return [newest[0], newest[1]]
    return acc[P_PRIOR]


def point_order(point: Sequence[Any]) -> tuple[float, str]:
    # Ties in event time are broken by the value's text so every arrival order agrees.
    return (point[0], str(point[1]))


def merge(stored: list[Any], late: list[Any]) -> list[Any]:
    """Fold a late partial into a closed window's stored accumulator (for its revision)."""
    if stored[0] != late[0]:
        raise ValueError("cannot merge accumulators of different kinds")
    if stored[0] == GAUGE:
        count = stored[1] + late[1]
        newer = (late[6], str(late[5])) > (stored[6], str(stored[5]))
        return [
            GAUGE,
            count,
            min(stored[2], late[2]),
            max(stored[3], late[3]),
            stored[4] + late[4],
            late[5] if newer else stored[5],
            late[6] if newer else stored[6],
            True,
        ]
    return [stored[0], stored[1] + late[1], stored[2] + late[2], stored[3], True]


def finalize(
    device: str, metric: str, start: int, window: int, acc: list[Any], revision: int = 0
) -> WindowRecord:
    """Turn an accumulator into the record the platform receives. A metric outside the catalog
    takes its unit from the registry; one restored from a checkpoint before its driver met it
    again in this process has no known unit yet ("")."""
    info = CATALOG.get(metric) or extra_metric(metric)
    unit, wrap = (info.unit, info.wrap) if info is not None else ("", 0.0)
    kind = acc[0]
    common = {
        "device": device,
        "metric": metric,
        "unit": unit,
        "kind": _KIND_NAMES[kind],
        "start": start,
        "window": window,
        "count": acc[1],
        "revision": revision,
    }
    if kind == GAUGE:
        return WindowRecord(
            **common, min=acc[2], max=acc[3], mean=acc[4] / acc[1], last=acc[5]
        )
    points = sorted(acc[P_POINTS], key=point_order)
    if kind == COUNTER:
        return WindowRecord(**common, **_counter_fields(points, wrap, acc[P_PRIOR]))
    return WindowRecord(**common, **_state_fields(points, acc[P_PRIOR], start, start + window))


def _counter_fields(points: list[list[Any]], wrap: float, prior: list[Any] | None = None) -> dict[str, Any]:
    """Increase since the series' last reading before the window (carried from the previous
    closed window), so consecutive windows' deltas add up to the register's increase even with
    one reading per window. A decrease is a wrap (if the metric declares a modulus and the jump
    fits it) or a reset to zero, never a negative delta."""
    delta = 0.0
    resets = 0
    steps = points if prior is not None else points[1:]
    previous = prior[1] if prior is not None else points[0][1]
    for _, value in steps:
        step = value - previous
        if step < 0:
            resets += 1
            step = (wrap - previous + value) if wrap and previous < wrap else value
        delta += step
        previous = value
    return {"first": points[0][1], "last": points[-1][1], "delta": delta, "resets": resets}


def _state_fields(
    points: list[list[Any]], prior: list[Any] | None, start: int, end: int
) -> dict[str, Any]:
    durations: dict[str, float] = {}
    transitions = 0
    state = prior[1] if prior is not None else None
    cursor = float(start)
    for ts, value in points:
        ts = max(float(ts), cursor)
        if state is not None:
            durations[state] = durations.get(state, 0.0) + (ts - cursor)
            if value != state:
                transitions += 1
        state = value
        cursor = ts
    if state is not None:
        durations[state] = durations.get(state, 0.0) + (end - cursor)
    durations = {k: round(v, 6) for k, v in durations.items() if v > 0 or k == state}
    return {"last": state, "transitions": transitions, "durations": durations}
