"""Payload codecs: one pure module per manufacturer family, chosen by name in the config.

A codec is `decode(payload: bytes, fport: int | None) -> list[Measurement]`: catalog metric
names with values in catalog units. A value the device itself marks as "sensor absent or
failed" (a sentinel such as the LHT65's 0x7FFF) is a Measurement with value None, so the
caller counts it (cause `sensor_absent`) instead of the reading vanishing unnoticed. A codec
that carries a sensor identity per value (Cayenne LPP's data channel) fills `channel`.
Malformed payloads raise `LoRaWANDecodeError` with cause `codec_<family>`; a frame on an FPort
the device does not use for readings raises cause `unexpected_fport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from drivers.lorawan.codecs import cayenne_lpp, decentlab, dragino_lht65, elsys, milesight
from drivers.lorawan.codecs.measurement import Measurement

__all__ = ["CODECS", "Codec", "Measurement", "Measurements"]

Measurements = list[Measurement]
Codec = Callable[[bytes, "int | None"], Measurements]

CODECS: Final[dict[str, Codec]] = {
    "cayenne_lpp": cayenne_lpp.decode,
    "dragino_lht65": dragino_lht65.decode,
    "dragino_lht65n": dragino_lht65.decode,
    "elsys": elsys.decode,
    "milesight": milesight.decode,
    "milesight_am100": milesight.decode,
    "milesight_am300": milesight.decode,
    "milesight_em500_co2": milesight.decode,
    "decentlab_dl_sht35": decentlab.decode_dl_sht35,
}
