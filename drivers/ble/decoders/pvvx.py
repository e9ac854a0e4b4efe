"""Xiaomi LYWSD03MMC (and kin) with custom firmware: service data 0x181A (Environmental Sensing).

Two layouts share the UUID and are told apart by length:
- pvvx "custom format (all data little-endian)", github.com/pvvx/ATC_MiThermometer README:
  MAC (6, reversed), temperature int16 x0.01 degC, humidity uint16 x0.01 %, battery uint16 mV,
  battery uint8 %, measurement counter uint8, flags uint8 -> 15 bytes.
- atc1441 format, github.com/atc1441/ATC_MiThermometer README "Advertising format of the custom
  firmware" (also emitted by pvvx firmware in "atc1441" mode): MAC (6, in order), temperature
  int16 big-endian x0.1 degC, humidity uint8 %, battery uint8 %, battery uint16 big-endian mV,
  frame counter uint8 -> 13 bytes.
`payload` is the service data after the UUID.
"""

from __future__ import annotations

import struct
from typing import Final

from drivers.ble.decoders import Decoded
from drivers.ble.errors import BleDecodeError
from gateway.model import Reading

__all__ = ["decode"]

_PVVX: Final = struct.Struct("<6shHHBBB")
_ATC1441: Final = struct.Struct(">6shBBHB")


def _decode_pvvx(payload: bytes, device: str, ts: float) -> Decoded:
    _, temperature, humidity, battery_mv, battery, counter, _flags = _PVVX.unpack(payload)
    readings = [
        Reading(device, "temperature", temperature / 100, ts),
        Reading(device, "humidity", humidity / 100, ts),
        Reading(device, "battery_voltage", battery_mv / 1000, ts),
        Reading(device, "battery", float(battery), ts),
    ]
    return Decoded("pvvx", counter, readings)


def _decode_atc1441(payload: bytes, device: str, ts: float) -> Decoded:
    _, temperature, humidity, battery, battery_mv, counter = _ATC1441.unpack(payload)
    readings = [
        Reading(device, "temperature", temperature / 10, ts),
        Reading(device, "humidity", float(humidity), ts),
        Reading(device, "battery", float(battery), ts),
        Reading(device, "battery_voltage", battery_mv / 1000, ts),
    ]
    return Decoded("atc1441", counter, readings)


_BY_LENGTH: Final = {_PVVX.size: _decode_pvvx, _ATC1441.size: _decode_atc1441}


def decode(payload: bytes, device: str, ts: float) -> Decoded:
    decoder = _BY_LENGTH.get(len(payload))
    if decoder is None:
        raise BleDecodeError(
            "pvvx_length", f"expected {_PVVX.size} (pvvx) or {_ATC1441.size} (atc1441) bytes, got {len(payload)}",
            device=device,
        )
    return decoder(payload, device, ts)
