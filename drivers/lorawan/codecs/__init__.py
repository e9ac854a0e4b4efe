"""Payload codecs: one pure module per manufacturer family, chosen by name in the config.

A codec is `decode(payload: bytes, fport: int | None) -> list[tuple[str, float]]`: catalog
metric names with values in catalog units. Invalid-value sentinels are left out (missing, not
a reading). Malformed payloads raise `LoRaWANDecodeError` with cause `codec_<family>`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from drivers.lorawan.codecs import cayenne_lpp, decentlab, dragino_lht65, elsys, milesight

__all__ = ["CODECS", "Codec", "Measurements"]

Measurements = list[tuple[str, float]]
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
