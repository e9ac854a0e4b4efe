"""Decentlab protocol version 2 (decentlab/decentlab-decoders, DL-SHT35).

version(1) = 2 | device id(2) | flags(2, bit i = sensor i present) | 16-bit big-endian words.
DL-SHT35: sensor 0 = two words (temperature 175 * x / 65535 - 45 degC, humidity
100 * x / 65535 %RH), sensor 1 = one word (battery voltage x / 1000 V).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from drivers.lorawan.codecs.measurement import Measurement
from drivers.lorawan.errors import LoRaWANDecodeError

__all__ = ["decode_dl_sht35"]

_VERSION: Final = 2

Sensor = tuple[int, tuple[tuple[str, Callable[[list[int]], float]], ...]]

DL_SHT35: Final[tuple[Sensor, ...]] = (
    (2, (("temperature", lambda x: 175 * x[0] / 65535 - 45), ("humidity", lambda x: 100 * x[1] / 65535))),
    (1, (("battery_voltage", lambda x: x[0] / 1000),)),
)


def _decode(payload: bytes, sensors: tuple[Sensor, ...], cause: str) -> list[Measurement]:
    if len(payload) < 5:
        raise LoRaWANDecodeError(cause, f"{len(payload)} bytes, the header has 5")
    if payload[0] != _VERSION:
        raise LoRaWANDecodeError(cause, f"protocol version {payload[0]}, expected {_VERSION}")
    flags = int.from_bytes(payload[3:5], "big")
    pos = 5
    out: list[Measurement] = []
    for index, (words, values) in enumerate(sensors):
        if not flags >> index & 1:
            continue
        end = pos + 2 * words
        if end > len(payload):
            raise LoRaWANDecodeError(cause, f"sensor {index} cut short")
        x = [int.from_bytes(payload[p : p + 2], "big") for p in range(pos, end, 2)]
        out.extend(Measurement(metric, convert(x)) for metric, convert in values)
        pos = end
    return out


def decode_dl_sht35(payload: bytes, fport: int | None = None) -> list[Measurement]:
    return _decode(payload, DL_SHT35, "codec_decentlab_dl_sht35")


def encode_dl_sht35(device_id: int, temperature: float, humidity: float, battery_v: float) -> bytes:
    """The device's side, for the simulator."""
    t = round((temperature + 45) * 65535 / 175)
    h = round(humidity * 65535 / 100)
    return bytes((_VERSION,)) + device_id.to_bytes(2, "big") + (3).to_bytes(2, "big") + b"".join(
        v.to_bytes(2, "big") for v in (t, h, round(battery_v * 1000))
    )
