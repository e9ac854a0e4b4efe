"""Where each `type` in the config lives. Modules are imported only when a config names them,
so a gateway with only serial sensors never imports bleak or D-Bus code."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

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
