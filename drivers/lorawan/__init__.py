"""Driver `lorawan`: LoRaWAN climate sensors through a network server's MQTT integration
(ChirpStack v3/v4, The Things Stack v3) or straight from a concentrator's Semtech UDP packet
forwarder (ABP and OTAA, MIC, decryption, frame counters, dedup). See README.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.lorawan.config import CODEC_NAMES, Config, Device, Profile

if TYPE_CHECKING:
    from drivers.lorawan.driver import LoRaWANDriver

__all__ = ["CODEC_NAMES", "Config", "Device", "Profile", "load_driver"]


def load_driver() -> type[LoRaWANDriver]:
    from drivers.lorawan.driver import LoRaWANDriver

    return LoRaWANDriver
