"""Simulated climate tags: each produces the advertisement payload its real firmware would.

Values move over time in steps every format represents exactly (0.1 degC, whole %RH, whole Pa),
so a test can compare what arrived with what was sent without rounding slack. Encoders follow
the same public layouts the gateway's decoders cite (Ruuvi data formats 5 and 3, bthome.io,
pvvx/atc1441 READMEs); they are written independently of the decoders.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESCCM

__all__ = ["CARRIES", "FORMATS", "SENDS", "SimTag", "make_tags"]

RUUVI_COMPANY: Final = 0x0499
BTHOME_UUID: Final = "0000fcd2-0000-1000-8000-00805f9b34fb"
ESS_UUID: Final = "0000181a-0000-1000-8000-00805f9b34fb"

FORMATS: Final = ("ruuvi5", "ruuvi3", "bthome", "bthome_air", "bthome_enc", "pvvx", "atc1441")
# Second-to-last MAC byte per format, so every tag has a stable, distinct address.
_MAC_TAG: Final = {"ruuvi5": 0x05, "ruuvi3": 0x03, "bthome": 0xB0, "bthome_air": 0xB1,
                   "bthome_enc": 0xBE, "pvvx": 0x9A, "atc1441": 0xA7}
DEFAULT_KEY: Final = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")  # bthome.io example key


@dataclass
class SimTag:
    format: str
    index: int
    key: bytes = DEFAULT_KEY
    measurement: int = 0  # advances once per new measurement
    counter: int = 0x00112233  # BTHome encryption counter, grows per advertisement
    sent: list[dict[str, float]] = field(default_factory=list)  # distinct measurements delivered
    advertisements: int = 0

    @property
    def mac(self) -> str:
        return f"F0:CA:FE:00:{_MAC_TAG[self.format]:02X}:{self.index:02X}"

    @property
    def mac_bytes(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", ""))

    def values(self) -> dict[str, float]:
        n = self.measurement + 7 * self.index
        wave = round(20 * math.sin(n / 4))  # -20..20 tenths
        values = {
            "temperature": round(21.0 + wave / 10 + (self.index % 5), 1),
            "humidity": float(40 + (n % 20)),
            "pressure": float(100000 + 10 * (n % 50)),
            "battery": float(90 - (n % 10)),
            "battery_voltage": round(2.9 + (n % 10) / 100, 3),
        }
        if self.format == "bthome_air":
            values = {"co2": float(400 + 10 * (n % 60)), "pm2_5": float(5 + n % 20),
                      "pm10": float(10 + n % 30), "tvoc_mass": float(100 + n % 50)}
        return values

    def advance(self) -> None:
        self.measurement += 1

    # -- encoders -----------------------------------------------------------------------------

    def advertisement(self) -> tuple[dict[int, bytes], dict[str, bytes]]:
        """(manufacturer data, service data) of the current advertisement."""
        encode: Callable[[dict[str, float]], tuple[dict[int, bytes], dict[str, bytes]]] = getattr(
            self, "_" + self.format
        )
        return encode(self.values())

    def _ruuvi5(self, v: dict[str, float]) -> tuple[dict[int, bytes], dict[str, bytes]]:
        power = (round(v["battery_voltage"] * 1000) - 1600) << 5 | (4 + 40) // 2
        payload = struct.pack(
            ">BhHHhhhHBH6s", 5, round(v["temperature"] / 0.005), round(v["humidity"] / 0.0025),
            round(v["pressure"]) - 50000, 0, 0, 1000, power, self.measurement % 255,
            self.measurement % 65535, self.mac_bytes,
        )
        return {RUUVI_COMPANY: payload}, {}

    def _ruuvi3(self, v: dict[str, float]) -> tuple[dict[int, bytes], dict[str, bytes]]:
        hundredths = round(abs(v["temperature"]) * 100)
        sign = 0x80 if v["temperature"] < 0 else 0
        payload = struct.pack(
            ">BBBBHhhhH", 3, round(v["humidity"] * 2), sign | hundredths // 100, hundredths % 100,
            round(v["pressure"]) - 50000, 0, 0, 1000, round(v["battery_voltage"] * 1000),
        )
        return {RUUVI_COMPANY: payload}, {}

    def _bthome_objects(self, v: dict[str, float]) -> bytes:
        # bthome.io/format: ids in ascending order, packet id first.
        return (
            b"\x00" + bytes((self.measurement % 256,))
            + b"\x01" + bytes((round(v["battery"]),))
            + b"\x02" + round(v["temperature"] * 100).to_bytes(2, "little", signed=True)
            + b"\x03" + round(v["humidity"] * 100).to_bytes(2, "little")
            + b"\x04" + round(v["pressure"]).to_bytes(3, "little")
        )

    def _bthome(self, v: dict[str, float]) -> tuple[dict[int, bytes], dict[str, bytes]]:
        return {}, {BTHOME_UUID: b"\x40" + self._bthome_objects(v)}

    def _bthome_air(self, v: dict[str, float]) -> tuple[dict[int, bytes], dict[str, bytes]]:
        objects = (
            b"\x00" + bytes((self.measurement % 256,))
            + b"\x0d" + round(v["pm2_5"]).to_bytes(2, "little")
            + b"\x0e" + round(v["pm10"]).to_bytes(2, "little")
            + b"\x12" + round(v["co2"]).to_bytes(2, "little")
            + b"\x13" + round(v["tvoc_mass"]).to_bytes(2, "little")
        )
        return {}, {BTHOME_UUID: b"\x40" + objects}

    def _bthome_enc(self, v: dict[str, float]) -> tuple[dict[int, bytes], dict[str, bytes]]:
        # bthome.io/encryption: nonce = MAC + 0xFCD2 (LE) + device info + counter (LE), MIC 4.
        info = 0x41
        counter = self.counter.to_bytes(4, "little")
        nonce = self.mac_bytes + b"\xd2\xfc" + bytes((info,)) + counter
        sealed = AESCCM(self.key, tag_length=4).encrypt(nonce, self._bthome_objects(v), None)
        return {}, {BTHOME_UUID: bytes((info,)) + sealed[:-4] + counter + sealed[-4:]}

    def _pvvx(self, v: dict[str, float]) -> tuple[dict[int, bytes], dict[str, bytes]]:
        payload = struct.pack(
            "<6shHHBBB", self.mac_bytes[::-1], round(v["temperature"] * 100), round(v["humidity"] * 100),
            round(v["battery_voltage"] * 1000), round(v["battery"]), self.measurement % 256, 0,
        )
        return {}, {ESS_UUID: payload}

    def _atc1441(self, v: dict[str, float]) -> tuple[dict[int, bytes], dict[str, bytes]]:
        payload = struct.pack(
            ">6shBBHB", self.mac_bytes, round(v["temperature"] * 10), round(v["humidity"]),
            round(v["battery"]), round(v["battery_voltage"] * 1000), self.measurement % 256,
        )
        return {}, {ESS_UUID: payload}


# What each format carries (the gateway emits these metrics per distinct measurement, + rssi).
CARRIES: Final[dict[str, tuple[str, ...]]] = {
    "ruuvi5": ("temperature", "humidity", "pressure", "battery_voltage"),
    "ruuvi3": ("temperature", "humidity", "pressure", "battery_voltage"),
    "bthome": ("temperature", "humidity", "pressure", "battery"),
    "bthome_air": ("co2", "pm2_5", "pm10", "tvoc_mass"),
    "bthome_enc": ("temperature", "humidity", "pressure", "battery"),
    "pvvx": ("temperature", "humidity", "battery", "battery_voltage"),
    "atc1441": ("temperature", "humidity", "battery", "battery_voltage"),
}


def make_tags(per_format: int, formats: tuple[str, ...] = FORMATS, key: bytes = DEFAULT_KEY) -> list[SimTag]:
    return [SimTag(fmt, i, key=key) for fmt in formats for i in range(per_format)]


# Every measurement each format's advertisement encodes above (the device's own record of what it
# sends; sequence numbers, packet ids, counters and flags are not measurements): the city's
# oracle of readings sent, independent of the gateway's decoders.
SENDS: Final[dict[str, tuple[str, ...]]] = {
    "ruuvi5": ("temperature", "humidity", "pressure", "acceleration_x", "acceleration_y", "acceleration_z",
               "battery_voltage", "tx_power", "movement_count"),
    "ruuvi3": ("humidity", "temperature", "pressure", "acceleration_x", "acceleration_y", "acceleration_z",
               "battery_voltage"),
    "bthome": ("battery", "temperature", "humidity", "pressure"),
    "bthome_air": ("pm2_5", "pm10", "co2", "tvoc_mass"),
    "bthome_enc": ("battery", "temperature", "humidity", "pressure"),
    "pvvx": ("temperature", "humidity", "battery_voltage", "battery"),
    "atc1441": ("temperature", "humidity", "battery", "battery_voltage"),
}
