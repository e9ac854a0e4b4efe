"""Elsys (ERS, ERS CO2, ELT, EMS ...) payload: repeated [type(1), value(N)], big endian.

Types and sizes from Elsys' "Elsys LoRa payload" document (elsys.se/en/elsys-payload, v2.x
type table). Every measurement type has a catalog metric; the few that are not measurements
are skipped by size (see the table). Type 0x3E (settings) has a length byte and ends the
measurements.
"""

from __future__ import annotations

from typing import Final

from drivers.lorawan.codecs.measurement import Measurement
from drivers.lorawan.errors import LoRaWANDecodeError

__all__ = ["decode"]

_G = 9.80665 / 63  # acceleration counts: 63 = 1 G

# type: (size, signed, ((metric or None, scale), ...)) with components of equal width. Not
# forwarded, on purpose: 0x09 GPS (its layout is not in the public type table this codec
# cites), 0x13 Grid-EYE (an 8x8 thermal image, not a time series), 0x3D debug.
_TYPES: Final[dict[int, tuple[int, bool, tuple[tuple[str | None, float], ...]]]] = {
    0x01: (2, True, (("temperature", 0.1),)),
    0x02: (1, False, (("humidity", 1.0),)),
    0x03: (3, True, (("acceleration_x", _G), ("acceleration_y", _G), ("acceleration_z", _G))),
    0x04: (2, False, (("illuminance", 1.0),)),
    0x05: (1, False, (("motion_count", 1.0),)),  # PIR motion count in the period
    0x06: (2, False, (("co2", 1.0),)),
    0x07: (2, False, (("battery_voltage", 0.001),)),  # VDD in mV
    0x08: (2, False, (("analog_input_voltage", 0.001),)),  # analog input 1, mV
    0x09: (6, True, ((None, 1.0), (None, 1.0))),  # GPS
    0x0A: (2, False, (("pulse_count_relative", 1.0),)),  # pulse input 1, relative
    0x0B: (4, False, (("pulse_count", 1.0),)),  # pulse input 1, absolute
    0x0C: (2, True, (("temperature_external", 0.1),)),  # external temperature 1
    0x0D: (1, False, (("digital_input", 1.0),)),  # external digital input 1
    0x0E: (2, False, (("distance", 0.001),)),  # external distance sensor, mm
    0x0F: (1, False, (("acceleration_events", 1.0),)),  # acceleration movement count
    0x10: (4, True, (("temperature_ir_internal", 0.1), ("temperature_ir_external", 0.1))),
    0x11: (1, False, (("occupancy_state", 1.0),)),  # 0 vacant, 1 pending, 2 occupied
    0x12: (1, False, (("water_leak", 1.0),)),  # 0..255 leak level
    0x13: (65, False, ((None, 1.0),)),  # Grid-EYE
    0x14: (4, False, (("pressure", 0.1),)),  # hPa * 1000 -> Pa: value / 1000 * 100
    0x15: (2, False, (("sound_level_peak", 1.0), ("sound_level", 1.0))),  # peak, average dB
    0x16: (2, False, (("pulse_count_relative", 1.0),)),  # pulse input 2, relative
    0x17: (4, False, (("pulse_count", 1.0),)),  # pulse input 2, absolute
    0x18: (2, False, (("analog_input_voltage", 0.001),)),  # analog input 2, mV
    0x19: (2, True, (("temperature_external", 0.1),)),  # external temperature 2
    0x1A: (1, False, (("digital_input", 1.0),)),  # external digital input 2
    0x1B: (4, True, (("analog_input_voltage", 0.000001),)),  # external analog uV
    0x1C: (2, False, (("tvoc", 1.0),)),  # ppb
    0x3D: (4, False, ((None, 1.0),)),  # debug
}
# Types that are one of several inputs of one kind: the input number is the channel, so two
# external probes stay two series (decode.py names the devices).
_CHANNEL: Final[dict[int, int]] = {
    0x08: 1, 0x18: 2, 0x1B: 3,
    0x0A: 1, 0x16: 2, 0x0B: 1, 0x17: 2,
    0x0C: 1, 0x19: 2, 0x0D: 1, 0x1A: 2,
}
_SETTINGS: Final = 0x3E
_OCCUPANCY: Final = ("vacant", "pending", "occupied")


def _normalise(metric: str, value: float) -> float | str | None:
    # water_leak is a 0/1 flag in the catalog; occupancy a state (None: outside the table)
    if metric == "occupancy_state":
        index = int(value)
        return _OCCUPANCY[index] if 0 <= index < len(_OCCUPANCY) else None
    if metric == "water_leak":
        return 1.0 if value > 0 else 0.0
    return round(value, 9)


def decode(payload: bytes, fport: int | None = None) -> list[Measurement]:
    out: list[Measurement] = []
    pos, n = 0, len(payload)
    while pos < n:
        kind = payload[pos]
        if kind == _SETTINGS:
            break
        row = _TYPES.get(kind)
        if row is None:
            raise LoRaWANDecodeError("codec_elsys", f"unknown type 0x{kind:02x}")
        size, signed, fields = row
        start = pos + 1
        if start + size > n:
            raise LoRaWANDecodeError("codec_elsys", f"type 0x{kind:02x} value cut short")
        width = size // len(fields)
        for i, (metric, scale) in enumerate(fields):
            if metric is None:
                continue
            raw = int.from_bytes(payload[start + i * width : start + (i + 1) * width], "big", signed=signed)
            out.append(Measurement(metric, _normalise(metric, raw * scale), _CHANNEL.get(kind)))
        pos = start + size
    return out


def encode(temperature: float, humidity: int, light: int, motion: int, co2: int, vdd_mv: int) -> bytes:
    """The device's side, for the simulator (an ERS CO2 frame)."""
    return (
        b"\x01" + round(temperature * 10).to_bytes(2, "big", signed=True)
        + b"\x02" + bytes((humidity,))
        + b"\x04" + light.to_bytes(2, "big")
        + b"\x05" + bytes((motion,))
        + b"\x06" + co2.to_bytes(2, "big")
        + b"\x07" + vdd_mv.to_bytes(2, "big")
    )
