"""Driver `ble`: RuuviTag, BTHome v2 (optionally encrypted) and Xiaomi pvvx/atc1441 climate tags
over bleak's BlueZ backend, with stalled-scanner recovery. See README.md for the keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.ble.config import Config

if TYPE_CHECKING:
    from drivers.ble.driver import BleDriver

__all__ = ["Config", "load_driver"]


def load_driver() -> type[BleDriver]:
    from drivers.ble.driver import BleDriver

    return BleDriver
