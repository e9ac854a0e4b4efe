"""Dragino LHT65 / LHT65N temperature and humidity sensor, uplink on FPort 2.

Layout (Dragino LHT65 User Manual section 2.4 "Uplink Payload"; LHT65N manual section 2.4),
big endian: BAT(2: bits 15..14 status -> `battery_status`, 13..0 millivolts) | built-in temperature (int16 / 100)
| built-in humidity (uint16 / 10) | Ext (1: low nibble = external sensor type) | Ext value (4,
absent when Ext = 0). Ext type 1 is a DS18B20 probe: int16 / 100 degC, 0x7FFF = no probe
(section 2.4.6). FPort 3 carries datalog records and FPort 5 device status: this codec reads
neither, so a frame on any port but 2 is an `unexpected_fport` decode error (counted, not
silently empty). A 0x7FFF temperature or a humidity above 100.0 %RH is the sensor saying it is
absent or failed: a Measurement with value None, counted as `sensor_absent` by the caller.
"""

from __future__ import annotations

from typing import Final

from drivers.lorawan.codecs.measurement import Measurement
from drivers.lorawan.errors import LoRaWANDecodeError

__all__ = ["decode"]

_NO_VALUE: Final = 0x7FFF  # sensor absent or failed (327.67)


_READINGS_PORT: Final = 2
# BAT bits 15..14 (manual 2.4.1): 00 ultra low (<= 2.50 V), 01 low, 10 OK, 11 good (>= 2.65 V)
_BATTERY_STATUS: Final = ("ultra_low", "low", "ok", "good")


def decode(payload: bytes, fport: int | None = _READINGS_PORT) -> list[Measurement]:
    """The FPort 2 uplink; absent sensors come back as value None (see the module docstring)."""
    if fport is not None and fport != _READINGS_PORT:
        raise LoRaWANDecodeError("unexpected_fport", f"FPort {fport}, the LHT65 sends readings on 2")
    if len(payload) < 7:
        raise LoRaWANDecodeError("codec_dragino_lht65", f"{len(payload)} bytes, need at least 7")
    bat_word = int.from_bytes(payload[0:2], "big")
    bat = bat_word & 0x3FFF
    temp_raw = int.from_bytes(payload[2:4], "big", signed=True)
    hum_raw = int.from_bytes(payload[4:6], "big")
    out = [
        Measurement("battery_voltage", bat / 1000),
        Measurement("battery_status", _BATTERY_STATUS[bat_word >> 14]),
        Measurement("temperature", None if temp_raw == _NO_VALUE else temp_raw / 100),
        # above 100.0 %RH is the SHT's "no data" pattern
        Measurement("humidity", hum_raw / 10 if hum_raw <= 1000 else None),
    ]
    ext_type = payload[6] & 0x0F
    if ext_type == 1:
        if len(payload) < 9:
            raise LoRaWANDecodeError("codec_dragino_lht65", "external temperature cut short")
        ext_raw = int.from_bytes(payload[7:9], "big", signed=True)
        out.append(Measurement("temperature_external", None if ext_raw == _NO_VALUE else ext_raw / 100))
    return out


def encode(battery_mv: int, temperature: float, humidity: float, external: float | None) -> bytes:
    """The device's side, for the simulator: Ext type 1 with a probe value or 0x7FFF."""
    ext = _NO_VALUE if external is None else round(external * 100)
    return (
        (0xC000 | battery_mv).to_bytes(2, "big")
        + round(temperature * 100).to_bytes(2, "big", signed=True)
        + round(humidity * 10).to_bytes(2, "big")
        + b"\x01"
        + ext.to_bytes(2, "big", signed=True)
        + b"\x7f\xff"
    )
