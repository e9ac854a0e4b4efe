"""Driver `serial`: climate sensors on serial ports (Modbus RTU over RS-485, the SDS011
particulate sensor, Vaisala WXT5xx weather stations). See README.md for the config keys.

Light on purpose: pyserial and pymodbus are imported only by `load_driver()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.serial.config import Config

if TYPE_CHECKING:
    from drivers.serial.driver import SerialDriver

__all__ = ["Config", "load_driver"]


def load_driver() -> type[SerialDriver]:
    from drivers.serial.driver import SerialDriver

    return SerialDriver
