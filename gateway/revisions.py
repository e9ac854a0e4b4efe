"""What a close step means for the platform: first records, revisions, and what they revise.

Pure: no SQLite, no clock. The outbox hands in a `WindowStore` (the stored aggregate and revision
of every closed window still within `max_lateness`) and gets back the records to send; the store
decides how that is kept on disk.

Rules (design.md, Windows; README, "The batch format"):
- a window closing for the first time is revision 0;
- a late partial merges into the stored aggregate of its window and becomes revision + 1; a late
  reading for a window in which the series had no record yet is that window's revision 0;
- a counter's delta and a state's durations depend on the reading before the window (its prior).
  A late counter or state reading therefore also revises the next window of the series that has
  a record, when that window started from an older reading. Windows without a record in between
  need nothing: under batch v2 the platform carries the state through them.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.batch import WindowRecord
from gateway.windows import (
    CloseResult,
    SeriesKey,
    finalize,
    is_gauge,
    last_point,
    merge,
    point_order,
    prior_of,
    set_prior,
)

__all__ = ["WindowStore", "close_records"]


class WindowStore(Protocol):
    """Closed windows' aggregates by (window start, series)."""

    def get(self, start: int, key: SeriesKey) -> tuple[int, list[Any]] | None: ...

    def put(self, start: int, key: SeriesKey, revision: int, acc: list[Any]) -> None: ...


def close_records(
    close: CloseResult,
    *,
    window: int,
    max_lateness: float,
    store: WindowStore,
) -> tuple[list[WindowRecord], int]:
    """Records for one close step (first closes, then revisions) and the number of revisions.
    Every aggregate that a later revision may need is put into `store`."""
    records: list[WindowRecord] = []
    for start, (device, metric), acc in close.closed:
        records.append(finalize(device, metric, start, window, acc))
        store.put(start, (device, metric), 0, acc)
    revisions = 0
    priors = close.late_priors
    for start, key, partial in close.late:
        found = store.get(start, key)
        if found is None:
            merged, revision = partial, 0
            if not is_gauge(partial):
                set_prior(merged, _reading_before(
                    store, key, start, window, close.closed_before, priors.get(key), max_lateness
                ))
        else:
            try:
                merged, revision = merge(found[1], partial), found[0] + 1
            except ValueError:
                continue  # the metric changed kind between versions: the stored window stands
            revisions += 1
        records.append(finalize(key[0], key[1], start, window, merged, revision))
        store.put(start, key, revision, merged)
        if not is_gauge(merged):
            revisions += _revise_next(store, key, start, merged, window, close.closed_before, records)
    return records, revisions


def _reading_before(
    store: WindowStore,
    key: SeriesKey,
    start: int,
    window: int,
    closed_before: int,
    carried: list[Any] | None,
    max_lateness: float,
) -> list[Any] | None:
    """The newest reading of a counter or state series before `start`: the nearest earlier
    stored window's last reading; else what the next stored window started from; else the value
    the aggregator carried (a state that has been stable for longer than the store keeps)."""
    probe = start - window
    oldest = start - int(max_lateness) - 2 * window  # the store keeps nothing older
    while probe >= oldest:
        found = store.get(probe, key)
        if found is not None:
            return last_point(found[1])
        probe -= window
    following = _next_stored(store, key, start, window, closed_before)
    if following is not None:
        prior = prior_of(following[2])
        if prior is not None and prior[0] < start:
            return [prior[0], prior[1]]
        return None
    if carried is not None and carried[0] < start:
        return [carried[0], carried[1]]
    return None


def _next_stored(
    store: WindowStore, key: SeriesKey, after: int, window: int, before: int
) -> tuple[int, int, list[Any]] | None:
    probe = after + window
    while probe < before:
        found = store.get(probe, key)
        if found is not None:
            return probe, found[0], found[1]
        probe += window
    return None


def _revise_next(
    store: WindowStore,
    key: SeriesKey,
    start: int,
    acc: list[Any],
    window: int,
    closed_before: int,
    records: list[WindowRecord],
) -> int:
    """A late reading changes what the next window with a record of the series starts from:
    revise it when it started from an older reading. Its own readings shield later windows."""
    carried = last_point(acc)
    if carried is None:
        return 0
    following = _next_stored(store, key, start, window, closed_before)
    if following is None:
        return 0
    next_start, revision, next_acc = following
    prior = prior_of(next_acc)
    if prior is not None and point_order(prior) >= point_order(carried):
        return 0  # it already starts from this reading or a newer one
    set_prior(next_acc, [carried[0], carried[1]])
    records.append(finalize(key[0], key[1], next_start, window, next_acc, revision + 1))
    store.put(next_start, key, revision + 1, next_acc)
    return 1
