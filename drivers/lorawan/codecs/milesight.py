"""Milesight AM100 (AM102/103/104/107), AM300 (AM307/308) and EM500-CO2 payloads.

Repeated [channel id(1), channel type(1), value(N)], little endian (Milesight-IoT
SensorDecoders README "Payload Definition" of each device; milesight.com product docs
"Uplink Data"). The (id, type) pair selects the field, so one table serves the family. The
historical-data record (0x20 0xCE) differs per model; it ends the decoding of the frame.
"""

from __future__ import annotations

from typing import Final

from drivers.lorawan.codecs.measurement import Measurement
from drivers.lorawan.errors import LoRaWANDecodeError

__all__ = ["decode"]

# (channel id, type): (size, signed, ((metric or None, scale), ...)) with equal-width components
_FIELDS: Final[dict[tuple[int, int], tuple[int, bool, tuple[tuple[str | None, float], ...]]]] = {
    (0x01, 0x75): (1, False, (("battery", 1.0),)),  # %
    (0x03, 0x67): (2, True, (("temperature", 0.1),)),  # INT16/10 degC
    (0x04, 0x68): (1, False, (("humidity", 0.5),)),  # UINT8/2 %RH
    (0x05, 0x6A): (2, False, (("motion_activity", 1.0),)),  # AM100 PIR activity level
    (0x05, 0x00): (1, False, (("occupancy", 1.0),)),  # AM300 PIR: 0 idle, 1 trigger
    (0x05, 0x7D): (2, False, (("co2", 1.0),)),  # EM500-CO2 CO2 ppm
    (0x06, 0x65): (6, False, (("illuminance", 1.0), ("light_visible_infrared", 1.0), ("light_infrared", 1.0))),
    (0x06, 0xCB): (1, False, (("light_level", 1.0),)),  # AM300 light level 0..5
    (0x06, 0x73): (2, False, (("pressure", 10.0),)),  # EM500-CO2 UINT16/10 hPa -> Pa
    (0x07, 0x7D): (2, False, (("co2", 1.0),)),  # AM104/107/300 CO2 ppm
    (0x08, 0x7D): (2, False, (("tvoc", 1.0),)),  # AM107 tVOC ppb
    (0x08, 0xE6): (2, False, (("voc_index", 0.01),)),  # AM300 tVOC level (IAQ) / 100
    (0x09, 0x73): (2, False, (("pressure", 10.0),)),  # UINT16/10 hPa -> Pa
    (0x0A, 0x7D): (2, False, (("hcho", 10.0),)),  # HCHO 0.01 mg/m3 -> ug/m3
    (0x0B, 0x7D): (2, False, (("pm2_5", 1.0),)),  # ug/m3
    (0x0C, 0x7D): (2, False, (("pm10", 1.0),)),  # ug/m3
    (0x0D, 0x7D): (2, False, (("o3", 10.0),)),  # O3 0.01 ppm -> ppb
    (0x0E, 0x01): (1, False, (("buzzer", 1.0),)),  # buzzer on/off
    # not forwarded: an alarm report (temperature and its jump), not a periodic measurement
    (0x83, 0xD7): (5, False, ((None, 1.0),)),  # EM500 temperature mutation alarm
    # device information frames, channel 0xFF
    (0xFF, 0x01): (1, False, ((None, 1.0),)),  # protocol version
    (0xFF, 0x09): (2, False, ((None, 1.0),)),  # hardware version
    (0xFF, 0x0A): (2, False, ((None, 1.0),)),  # firmware version
    (0xFF, 0x0B): (1, False, ((None, 1.0),)),  # power on
    (0xFF, 0x0F): (1, False, ((None, 1.0),)),  # class
    (0xFF, 0x16): (8, False, ((None, 1.0),)),  # serial number
    (0xFF, 0x18): (3, False, ((None, 1.0),)),  # sensor enable status
}
_HISTORY: Final = (0x20, 0xCE)


def decode(payload: bytes, fport: int | None = 85) -> list[Measurement]:
    out: list[Measurement] = []
    pos, n = 0, len(payload)
    while pos < n:
        if pos + 2 > n:
            raise LoRaWANDecodeError("codec_milesight", f"channel header cut at byte {pos}")
        key = (payload[pos], payload[pos + 1])
        if key == _HISTORY:
            break
        row = _FIELDS.get(key)
        if row is None:
            raise LoRaWANDecodeError("codec_milesight", f"unknown channel 0x{key[0]:02x} 0x{key[1]:02x}")
        size, signed, fields = row
        start = pos + 2
        if start + size > n:
            raise LoRaWANDecodeError("codec_milesight", f"channel 0x{key[0]:02x} value cut short")
        width = size // len(fields)
        for i, (metric, scale) in enumerate(fields):
            if metric is None:
                continue
            raw = int.from_bytes(payload[start + i * width : start + (i + 1) * width], "little", signed=signed)
            out.append(Measurement(metric, round(raw * scale, 9)))
        pos = start + size
    return out


def encode(battery: int, temperature: float, humidity: float, co2: int, pressure_hpa: float) -> bytes:
    """The device's side, for the simulator (an EM500-CO2 style frame)."""
    return (
        bytes((0x01, 0x75, battery))
        + bytes((0x03, 0x67)) + round(temperature * 10).to_bytes(2, "little", signed=True)
        + bytes((0x04, 0x68, round(humidity * 2)))
        + bytes((0x05, 0x7D)) + co2.to_bytes(2, "little")
        + bytes((0x06, 0x73)) + round(pressure_hpa * 10).to_bytes(2, "little")
    )
