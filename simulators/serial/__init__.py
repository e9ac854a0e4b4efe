"""Serial devices on pty pairs: a Modbus RTU bus (pymodbus server), an SDS011 particulate
sensor and a Vaisala WXT5xx station, each with fault injection and an unpluggable port."""

from simulators.serial.faults import Faults
from simulators.serial.modbus_slave import ModbusBusSim, SimUnit, xy_md02
from simulators.serial.pty import PtyPort
from simulators.serial.sds011 import Sds011Sim
from simulators.serial.wxt import WxtSim

__all__ = ["Faults", "ModbusBusSim", "PtyPort", "Sds011Sim", "SimUnit", "WxtSim", "xy_md02"]
