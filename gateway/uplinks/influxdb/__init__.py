"""Uplink `influxdb`: batches as InfluxDB line protocol (`lines`, pure) written over HTTP with
gzip, Retry-After, 413 splitting and dead letters (`writer`); `config` holds its Config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.uplinks.influxdb.config import Config

if TYPE_CHECKING:
    from gateway.uplinks.influxdb.writer import InfluxUplink

__all__ = ["Config", "load_uplink"]


def load_uplink() -> type[InfluxUplink]:
    from gateway.uplinks.influxdb.writer import InfluxUplink

    return InfluxUplink
