"""Cayenne Low Power Payload (myDevices, github.com/myDevicesIoT/CayenneLPP, README "Data Types").

Frame: repeated [channel(1), type(1), value(N)], big endian. Type = IPSO object id - 3200. Every
type of the README's table has catalog metrics: digital and analog I/O as sent (analog in 0.01
steps, no unit), gyrometer in deg/s, GPS latitude/longitude (0.0001 deg) and altitude (0.01 m). Each value carries its data channel, the sensor's identity
across frames (README "Data Channel"): two probes of one type stay two series (decode.py names
the devices). Presence (IPSO 3302) is a 0/1 flag in the catalog (`occupancy`): any non-zero
byte is 1.
"""

from __future__ import annotations

from typing import Final

from drivers.lorawan.codecs.measurement import Measurement
from drivers.lorawan.errors import LoRaWANDecodeError

__all__ = ["decode"]

_G = 9.80665  # standard gravity: LPP accelerometer counts 0.001 G, the catalog wants m/s2

# type: (size, signed, (metric or None, scale to catalog unit) per big-endian component)
_TYPES: Final[dict[int, tuple[int, bool, tuple[tuple[str | None, float], ...]]]] = {
    0x00: (1, False, (("digital_input", 1.0),)),
    0x01: (1, False, (("digital_output", 1.0),)),
    0x02: (2, True, (("analog_input", 0.01),)),  # 0.01 signed
    0x03: (2, True, (("analog_output", 0.01),)),
    0x65: (2, False, (("illuminance", 1.0),)),  # 1 lux unsigned
    0x66: (1, False, (("occupancy", 1.0),)),  # presence
    0x67: (2, True, (("temperature", 0.1),)),  # 0.1 degC signed
    0x68: (1, False, (("humidity", 0.5),)),  # 0.5 % unsigned
    0x71: (6, True, (("acceleration_x", 0.001 * _G), ("acceleration_y", 0.001 * _G), ("acceleration_z", 0.001 * _G))),
    0x73: (2, False, (("pressure", 10.0),)),  # 0.1 hPa unsigned -> Pa
    0x86: (6, True, (("angular_velocity_x", 0.01), ("angular_velocity_y", 0.01), ("angular_velocity_z", 0.01))),
    # GPS: 3 x 3-byte signed fields, latitude and longitude 0.0001 deg, altitude 0.01 m
    0x88: (9, True, (("latitude", 0.0001), ("longitude", 0.0001), ("altitude", 0.01))),
}


_FLAGS: Final = frozenset({"occupancy"})  # catalog 0/1 metrics: non-zero means 1


def decode(payload: bytes, fport: int | None = None) -> list[Measurement]:
    """Every value of the frame with its channel; raises on a cut or unknown record."""
    out: list[Measurement] = []
    pos, n = 0, len(payload)
    while pos < n:
        if pos + 2 > n:
            raise LoRaWANDecodeError("codec_cayenne_lpp", f"channel header cut at byte {pos}")
        channel, kind = payload[pos], payload[pos + 1]
        row = _TYPES.get(kind)
        if row is None:
            raise LoRaWANDecodeError("codec_cayenne_lpp", f"unknown data type 0x{kind:02x}")
        size, signed, fields = row
        start = pos + 2
        if start + size > n:
            raise LoRaWANDecodeError("codec_cayenne_lpp", f"type 0x{kind:02x} value cut short")
        width = size // len(fields)
        for i, (metric, scale) in enumerate(fields):
            if metric is None:
                continue
            raw = int.from_bytes(payload[start + i * width : start + (i + 1) * width], "big", signed=signed)
            out.append(Measurement(metric, (1.0 if raw else 0.0) if metric in _FLAGS else round(raw * scale, 9), channel))
        pos = start + size
    return out


_LPP_UNITS: Final[dict[int, float]] = {0x02: 0.01, 0x65: 1.0, 0x66: 1.0, 0x67: 0.1, 0x68: 0.5, 0x73: 0.1}


def encode(values: list[tuple[int, int, float]]) -> bytes:
    """(channel, type, value in LPP units: degC, %RH, hPa, lux) -> bytes; the simulator's side."""
    out = bytearray()
    for channel, kind, value in values:
        size, signed, _ = _TYPES[kind]
        out += bytes((channel, kind)) + round(value / _LPP_UNITS[kind]).to_bytes(size, "big", signed=signed)
    return bytes(out)
