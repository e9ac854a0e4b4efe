"""Where each `type` in the config lives. Modules are imported only when a config names them,
so a gateway with only serial sensors never imports bleak or D-Bus code."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from gateway.driver import Driver
    from gateway.uplinks.base import Uplink

DRIVER_PACKAGES: Final[dict[str, str]] = {
    "replay": "drivers.replay",
    "ocpp": "drivers.ocpp",
    "lorawan": "drivers.lorawan",
    "serial": "drivers.serial",
    "ble": "drivers.ble",
}

UPLINK_MODULES: Final[dict[str, str]] = {
    "file": "gateway.uplinks.file",
    "mqtt": "gateway.uplinks.mqtt",
    "influxdb": "gateway.uplinks.influxdb",
}


def driver_module(type_name: str) -> ModuleType:
    return importlib.import_module(DRIVER_PACKAGES[type_name])


def uplink_module(type_name: str) -> ModuleType:
    return importlib.import_module(UPLINK_MODULES[type_name])


def load_driver(type_name: str) -> type[Driver[Any]]:
    """The Driver subclass of a config `type` (its heavy imports happen now, not before)."""
    from gateway.driver import Driver

    found = driver_module(type_name).load_driver()
    if not (isinstance(found, type) and issubclass(found, Driver)):
        raise TypeError(f"{DRIVER_PACKAGES[type_name]}.load_driver() returned {found!r}, not a Driver")
    return found


def load_uplink(type_name: str) -> type[Uplink[Any]]:
    """The Uplink subclass of a config `type`."""
    from gateway.uplinks.base import Uplink

    found = uplink_module(type_name).load_uplink()
    if not (isinstance(found, type) and issubclass(found, Uplink)):
        raise TypeError(f"{UPLINK_MODULES[type_name]}.load_uplink() returned {found!r}, not an Uplink")
    return found
