"""The one value type every codec returns (its own module so codecs import it without a cycle)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Measurement"]


class Measurement(NamedTuple):
    """One decoded value in catalog units.

    `value` None means the device reported the sensor absent or failed: counted as
    `sensor_absent`, never turned into a reading and never silently dropped. `channel` is the
    sensor's identity inside the device where the payload format has one (Cayenne LPP's data
    channel, which "uniquely identifies each sensor in the device across frames" per the
    CayenneLPP README); None elsewhere."""

    metric: str
    value: float | str | None  # str: a state metric's value
    channel: int | None = None
