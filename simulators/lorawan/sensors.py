"""Simulated LoRaWAN end devices: keys, counters and the manufacturers' payload layouts."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.lorawan import phy
from drivers.lorawan.codecs import cayenne_lpp, decentlab, dragino_lht65, elsys, milesight

__all__ = ["FAMILIES", "VirtualSensor", "make_fleet"]

Values = dict[str, float | str]


def _lpp(i: int) -> tuple[int, bytes, Values]:
    t, h, p = 18.0 + (i % 20) * 0.5, 40.0 + (i % 10) * 2.5, 1000.0 + (i % 7)
    return 1, cayenne_lpp.encode([(1, 0x67, t), (2, 0x68, h), (3, 0x73, p)]), {
        "temperature": t, "humidity": h, "pressure": p * 100}


def _lht65(i: int) -> tuple[int, bytes, Values]:
    # with its DS18B20 probe plugged in (a probe-less 0x7FFF is counted as sensor_absent)
    t, h, probe = 15.0 + (i % 30) * 0.25, 50.0 + (i % 10), 12.0 + (i % 16) * 0.5
    # the battery word's top bits say "good" (0b11): the device reports its battery state too
    return 2, dragino_lht65.encode(3000, t, h, probe), {
        "temperature": t, "humidity": h, "battery_voltage": 3.0, "temperature_external": probe,
        "battery_status": "good"}


def _elsys(i: int) -> tuple[int, bytes, Values]:
    t, co2, light, motion = 21.0 + (i % 10) * 0.1, 400 + (i % 50) * 10, 100 + i % 100, i % 3
    return 5, elsys.encode(t, 45, light, motion, co2, 3600), {
        "temperature": t, "humidity": 45.0, "illuminance": float(light), "motion_count": float(motion),
        "co2": float(co2), "battery_voltage": 3.6}


def _milesight(i: int) -> tuple[int, bytes, Values]:
    t, co2 = 22.0 + (i % 10) * 0.1, 500 + (i % 40) * 5
    return 85, milesight.encode(90, t, 50.5, co2, 1005.5), {
        "temperature": t, "humidity": 50.5, "co2": float(co2), "battery": 90.0, "pressure": 100550.0}


def _decentlab(i: int) -> tuple[int, bytes, Values]:
    t, h = 10.0 + (i % 20) * 0.5, 60.0
    return 1, decentlab.encode_dl_sht35(782, t, h, 3.1), {"temperature": t, "humidity": h, "battery_voltage": 3.1}


# codec name -> payload generator (fport, bytes, every measurement the frame carries in catalog
# units: what the device means to send, the city's oracle of readings sent)
FAMILIES: dict[str, Callable[[int], tuple[int, bytes, Values]]] = {
    "cayenne_lpp": _lpp,
    "dragino_lht65": _lht65,
    "elsys": _elsys,
    "milesight": _milesight,
    "decentlab_dl_sht35": _decentlab,
}


@dataclass
class VirtualSensor:
    dev_eui: int
    family: str
    activation: str  # "abp" or "otaa"
    app_key: bytes = b""
    join_eui: int = 0
    dev_addr: int = 0
    nwk_skey: bytes = b""
    app_skey: bytes = b""
    fcnt: int = 0
    dev_nonce: int = 0
    sent: int = 0  # distinct data frames sent
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def eui_hex(self) -> str:
        return f"{self.dev_eui:016x}"

    @property
    def joined(self) -> bool:
        return bool(self.nwk_skey)

    def join_request(self) -> bytes:
        self.dev_nonce = (self.dev_nonce + 1) & 0xFFFF
        return phy.build_join_request(self.app_key, self.join_eui, self.dev_eui, self.dev_nonce)

    def accept(self, phy_payload: bytes) -> bool:
        """Take a JoinAccept if it is for us (the MIC under our AppKey decides)."""
        try:
            accept = phy.decrypt_join_accept(self.app_key, phy_payload)
        except Exception:  # noqa: BLE001 - not ours: wrong key gives a bad MIC
            return False
        self.nwk_skey, self.app_skey = phy.derive_session_keys(
            self.app_key, accept.app_nonce, accept.net_id, self.dev_nonce
        )
        self.dev_addr = accept.dev_addr
        self.fcnt = 0
        return True

    def measurement(self) -> tuple[int, bytes, Values]:
        return FAMILIES[self.family](self.sent)

    def next_frame(self) -> tuple[bytes, Values]:
        fport, payload, values = self.measurement()
        frame = phy.build_data_frame(
            nwk_skey=self.nwk_skey, app_skey=self.app_skey, dev_addr=self.dev_addr,
            fcnt32=self.fcnt, fport=fport, payload=payload,
        )
        self.fcnt += 1
        self.sent += 1
        return frame, values

    def device_config(self) -> dict[str, Any]:
        """The driver's [[drivers.devices]] table for this sensor."""
        out: dict[str, Any] = {"dev_eui": self.eui_hex, "codec": self.family, "activation": self.activation}
        if self.activation == "abp":
            out |= {"dev_addr": f"{self.dev_addr:08x}", "nwk_skey": self.nwk_skey.hex(), "app_skey": self.app_skey.hex()}
        else:
            out |= {"app_key": self.app_key.hex(), "join_eui": f"{self.join_eui:016x}"}
        return out


def make_fleet(per_family: int = 1, *, families: list[str] | None = None, otaa_every: int = 2,
               seed: int = 1) -> list[VirtualSensor]:
    """`per_family` sensors of each codec family; every `otaa_every`-th one joins by OTAA
    (0 = all ABP). Keys come from a seeded generator so a run is reproducible."""
    rng = random.Random(seed)
    fleet: list[VirtualSensor] = []
    n = 0
    for family in families or list(FAMILIES):
        for _ in range(per_family):
            n += 1
            dev_eui = 0x70B3D57ED0000000 | n
            if otaa_every and n % otaa_every == 0:
                fleet.append(VirtualSensor(dev_eui, family, "otaa", app_key=rng.randbytes(16),
                                           join_eui=0x70B3D57ED0001000, dev_nonce=rng.randrange(0x10000)))
            else:
                fleet.append(VirtualSensor(dev_eui, family, "abp", dev_addr=0x26000000 | n,
                                           nwk_skey=rng.randbytes(16), app_skey=rng.randbytes(16)))
    return fleet
