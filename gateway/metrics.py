"""The gateway's own metrics: each component describes its figures, one registry serves them.

A component (a driver's context, the windows, the outbox, an uplink runner, the runtime, the
loop's exception handler) counts in plain integers on its own hot path (no lock per reading)
and exposes a small collector, its `metrics`, whose `collect()` turns those integers into
Prometheus families. Nothing outside the component reads its counters: the runtime only
registers each component's collector in the gateway's `MetricsRegistry` when the component
starts and unregisters it when a reload stops it.

`/metrics`, `/status.json`, `edge-gateway status`, systemd's STATUS= and the run summary all
read that one registry, so they cannot disagree.

Several components describe the same family (every driver has `edge_gateway_readings_total`,
labelled with its name): the registry merges families of one name into one, since the text
format allows one HELP and TYPE per name.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

__all__ = ["PREFIX", "Collector", "MetricsRegistry", "Samples", "per_kind", "read_samples"]

PREFIX = "edge_gateway_"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")

# sample name -> [(labels, value)], `_created` samples left out
Samples = dict[str, list[tuple[dict[str, str], float]]]


class Collector(Protocol):
    """What a component exposes as its `metrics` (prometheus_client's custom collector)."""

    def collect(self) -> Iterable[Metric]: ...


class MetricsRegistry(CollectorRegistry):
    """The gateway's registry: collectors in the order registered, families of one name from
    several collectors merged into one, and `replace()` to swap the collectors of parts a reload
    changed in one step (a scrape meanwhile sees the old set or the new one, never both: two
    samples with the same labels would make Prometheus refuse the whole scrape)."""

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self._parts: list[Collector] = []
        self._parts_lock = threading.Lock()

    def register(self, collector: Collector) -> None:
        self.replace([], [collector])

    def unregister(self, collector: Collector) -> None:
        self.replace([collector], [])

    def replace(self, old: Iterable[Collector], new: Iterable[Collector]) -> None:
        """Unregister `old` and register `new` at once, `new` where the first of `old` was (so
        the drivers' samples keep their config order after a reload); a collector in both stays."""
        gone = {id(c) for c in old}
        with self._parts_lock:
            at = next((i for i, c in enumerate(self._parts) if id(c) in gone), len(self._parts))
            before = [c for c in self._parts[:at] if id(c) not in gone]
            after = [c for c in self._parts[at:] if id(c) not in gone]
            known = {id(c) for c in before + after}
            self._parts = before + [c for c in new if id(c) not in known] + after

    def collect(self) -> Iterator[Metric]:
        with self._parts_lock:
            parts = list(self._parts)
        merged: dict[str, Metric] = {}
        for part in parts:
            for family in part.collect():
                known = merged.get(family.name)
                if known is None:
                    merged[family.name] = family
                elif known.type == family.type:
                    known.samples.extend(family.samples)
                else:
                    raise ValueError(f"metric {family.name} is a {known.type} and a {family.type}")
        yield from merged.values()


def read_samples(registry: CollectorRegistry) -> Samples:
    """Every sample the registry holds now, by sample name (for the status and the summary)."""
    out: Samples = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def per_kind(prefix: str, label: str, owner: str, counters: Mapping[str, int], text: str) -> Iterator[Metric]:
    """One counter family per counter name, `<prefix><name>_total{<label>=owner}`: a driver's or
    uplink's own counters, so that a `sum()` over one of them means something."""
    for name, value in list(counters.items()):
        family = CounterMetricFamily(PREFIX + prefix + _UNSAFE.sub("_", name), text.format(name=name),
                                     labels=[label])
        family.add_metric([owner], value)
        yield family
