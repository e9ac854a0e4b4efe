"""The `ble` driver's config table ([[drivers]] type = "ble"), validated when the
config is read; the keys are documented in README.md beside this file."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from gateway.driver import DriverSettings

__all__ = ["Config"]

_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_KEY_RE = re.compile(r"^[0-9A-Fa-f]{32}$")


class Config(DriverSettings):
    # BlueZ adapter name ("hci0"); "" picks the first powered adapter with the central role.
    adapter: Annotated[str, msgspec.Meta(pattern=r"^(hci[0-9]{1,3})?$")] = ""
    # active: scan requests (BlueZ discovery); passive: no scan requests, through BlueZ's
    # advertisement monitor with or-patterns for the three formats (BlueZ >= 5.56 with
    # --experimental, kernel >= 5.10).
    scanning_mode: Literal["active", "passive"] = "active"
    # Tag MACs to accept ("AA:BB:CC:DD:EE:FF"); empty accepts every tag a decoder recognises.
    allow: list[str] = msgspec.field(default_factory=list)
    # Encrypted BTHome: MAC -> 32 hex characters (the 16-byte bind key).
    bthome_keys: dict[str, str] = msgspec.field(default_factory=dict)
    # Also emit each tag's received signal strength with every reading set.
    emit_rssi: bool = True
    # Seconds without any advertisement, while tags are expected, before recovery starts:
    # first the scanner is restarted, and if silence continues as long again, the adapter is
    # power-cycled through BlueZ (org.bluez.Adapter1.Powered).
    stall_timeout: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 120.0
    # Scanner restarts tried before the adapter is power-cycled.
    restarts_before_power_cycle: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1
    # Seconds the adapter stays powered off during a power cycle.
    power_off_seconds: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.0
    # Tags are expected from start-up (true), or only once one has been heard (false).
    expect_tags: bool = True

    def validate(self) -> list[str]:
        problems = [
            f"allow: expected MAC addresses like AA:BB:CC:DD:EE:FF, found {mac!r}"
            for mac in self.allow
            if not _MAC_RE.match(mac)
        ]
        for mac, key in self.bthome_keys.items():
            if not _MAC_RE.match(mac):
                problems.append(f"bthome_keys: expected MAC addresses as keys, found {mac!r}")
            if not _KEY_RE.match(key):
                problems.append(f"bthome_keys.{mac}: expected 32 hex characters, found {len(key)} characters")
        return problems
