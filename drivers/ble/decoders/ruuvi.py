"""RuuviTag manufacturer data (company id 0x0499): data formats 5 (RAWv2) and 3 (RAWv1).

Spec: docs.ruuvi.com, "Data format 5 (RAWv2)" and "Data format 3 (RAWv1)". All fields are
big-endian (MSB first). `payload` is the manufacturer-specific data after the company id, as
bleak hands it over (`AdvertisementData.manufacturer_data[0x0499]`).
"""

from __future__ import annotations

import struct
from typing import Final

from drivers.ble.decoders import Decoded
from drivers.ble.errors import BleDecodeError
from gateway.model import Reading

__all__ = ["decode"]

STANDARD_GRAVITY: Final = 9.80665  # m/s2 per g; Ruuvi reports acceleration in milli-g

# RAWv2: format, temperature, humidity, pressure, acc x/y/z, power info, movement, sequence,
# MAC. 24 bytes with the format byte ("Data format 5 (RAWv2)", payload table).
_DF5: Final = struct.Struct(">BhHHhhhHBH6s")
# RAWv1: format, humidity, temperature integer (sign bit + 7 bits), temperature fraction
# (1/100), pressure, acc x/y/z, battery mV. 14 bytes ("Data format 3 (RAWv1)", payload table).
_DF3: Final = struct.Struct(">BBBBHhhhH")

# RAWv2 "not available" sentinels: the smallest signed, the largest unsigned value, all-ones MAC
# ("Data format 5 (RAWv2)": not available is signified by ...).
_NA_SIGNED: Final = -0x8000
_NA_U16: Final = 0xFFFF
_NA_BATTERY: Final = 0x7FF  # 11 bits of the power-info field
_NA_TX_POWER: Final = 0x1F  # 5 bits of the power-info field
_NA_MOVEMENT: Final = 0xFF

# (metric, unpacked index, sentinel, scale, offset): value = raw * scale + offset.
_DF5_PLAIN: Final[tuple[tuple[str, int, int, float, float], ...]] = (
    ("temperature", 1, _NA_SIGNED, 0.005, 0.0),  # 0.005 degC steps
    ("humidity", 2, _NA_U16, 0.0025, 0.0),  # 0.0025 %RH steps
    ("pressure", 3, _NA_U16, 1.0, 50000.0),  # Pa, offset -50 000 Pa
    ("acceleration_x", 4, _NA_SIGNED, STANDARD_GRAVITY / 1000, 0.0),  # mG -> m/s2
    ("acceleration_y", 5, _NA_SIGNED, STANDARD_GRAVITY / 1000, 0.0),
    ("acceleration_z", 6, _NA_SIGNED, STANDARD_GRAVITY / 1000, 0.0),
)


def _decode_df5(payload: bytes, device: str, ts: float) -> Decoded:
    if len(payload) != _DF5.size:
        raise BleDecodeError("ruuvi_length", f"format 5 needs {_DF5.size} bytes, got {len(payload)}", device=device)
    fields = _DF5.unpack(payload)
    readings = [
        Reading(device, name, round(fields[index] * scale + offset, 6), ts)
        for name, index, sentinel, scale, offset in _DF5_PLAIN
        if fields[index] != sentinel
    ]
    power = fields[7]
    battery_mv, tx_code = power >> 5, power & 0x1F
    if battery_mv != _NA_BATTERY:  # 1600 mV offset ("Battery voltage" field)
        readings.append(Reading(device, "battery_voltage", (battery_mv + 1600) / 1000, ts))
    if tx_code != _NA_TX_POWER:  # -40 dBm offset, 2 dBm steps ("Tx Power" field)
        readings.append(Reading(device, "tx_power", float(tx_code * 2 - 40), ts))
    if fields[8] != _NA_MOVEMENT:
        readings.append(Reading(device, "movement_count", float(fields[8]), ts))
    sequence = fields[9] if fields[9] != _NA_U16 else None
    return Decoded("ruuvi5", sequence, readings)


def _decode_df3(payload: bytes, device: str, ts: float) -> Decoded:
    if len(payload) != _DF3.size:
        raise BleDecodeError("ruuvi_length", f"format 3 needs {_DF3.size} bytes, got {len(payload)}", device=device)
    _, humidity, temp_int, temp_frac, pressure, acc_x, acc_y, acc_z, battery = _DF3.unpack(payload)
    # Temperature: MSB is the sign, the other 7 bits the integer part (sign-magnitude, not
    # two's complement), then hundredths ("Data format 3", Temperature).
    magnitude = (temp_int & 0x7F) + temp_frac / 100
    temperature = -magnitude if temp_int & 0x80 else magnitude
    g = STANDARD_GRAVITY / 1000
    readings = [
        Reading(device, "humidity", humidity * 0.5, ts),
        Reading(device, "temperature", round(temperature, 2), ts),
        Reading(device, "pressure", float(pressure + 50000), ts),
        Reading(device, "acceleration_x", round(acc_x * g, 6), ts),
        Reading(device, "acceleration_y", round(acc_y * g, 6), ts),
        Reading(device, "acceleration_z", round(acc_z * g, 6), ts),
        Reading(device, "battery_voltage", battery / 1000, ts),
    ]
    return Decoded("ruuvi3", None, readings)


_FORMATS: Final = {5: _decode_df5, 3: _decode_df3}


def decode(payload: bytes, device: str, ts: float) -> Decoded:
    """Decode Ruuvi manufacturer data (without the 0x0499 company id)."""
    if not payload:
        raise BleDecodeError("ruuvi_length", "empty manufacturer data", device=device)
    decoder = _FORMATS.get(payload[0])
    if decoder is None:
        raise BleDecodeError("ruuvi_format", f"unsupported data format {payload[0]}", device=device)
    return decoder(payload, device, ts)
