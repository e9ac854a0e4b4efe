"""Pure advertisement decoders: payload bytes and receive time in, `Decoded` or BleDecodeError out.

No clock, socket, file or global state (the AES-CCM key schedule cache in `bthome` is a pure
memo). Which decoder gets which payload is decided by `classify` from the advertisement's
manufacturer id or service-data UUID, so a new tag family is a new row in `SOURCES`.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.model import Reading

__all__ = ["Decoded", "BTHOME_UUID", "ENVIRONMENTAL_SENSING_UUID", "RUUVI_COMPANY_ID"]

# Bluetooth SIG assigned numbers: company identifier 0x0499 (Ruuvi Innovations Ltd.),
# 16-bit UUID 0xFCD2 (Allterco Robotics, donated to BTHome), 0x181A (Environmental Sensing),
# expanded with the Bluetooth base UUID the way BlueZ and bleak present them.
RUUVI_COMPANY_ID = 0x0499
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
ENVIRONMENTAL_SENSING_UUID = "0000181a-0000-1000-8000-00805f9b34fb"


class Decoded(NamedTuple):
    """What one advertisement said.

    `sequence` is the tag's own sequence number (Ruuvi measurement sequence, BTHome packet id,
    pvvx/atc1441 frame counter) used to collapse repeated advertisements of one measurement;
    None when the format has none (then the payload itself is the identity). `counter` is the
    BTHome encryption counter, checked for replay by the driver (state lives outside the pure
    decoder). `unknown_object` is the first BTHome object id this table does not know: parsing
    stopped there, as the BTHome format requires. `unknown_events` counts BTHome event objects
    (button, dimmer) whose value is outside the published table.
    """

    format: str
    sequence: int | None
    readings: list[Reading]
    counter: int | None = None
    unknown_object: int | None = None
    unknown_events: int = 0
