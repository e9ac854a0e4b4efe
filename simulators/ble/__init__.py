"""BLE climate tags (RuuviTag, BTHome, pvvx/atc1441) on a private mock BlueZ."""

from simulators.ble.bus import PrivateBluez
from simulators.ble.sim import BleSimulator
from simulators.ble.tags import FORMATS, SimTag, make_tags

__all__ = ["FORMATS", "BleSimulator", "PrivateBluez", "SimTag", "make_tags"]
