"""Config of the serial driver: one `[[drivers]]` table is one port and one protocol on it.

Only msgspec and the standard library are imported here (the registry loads this at start-up
for every config); pyserial and pymodbus are imported by the driver modules.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from gateway.driver import DriverSettings
from gateway.model import CATALOG, FORWARDED_NAME, MAX_NAME_LENGTH

__all__ = [
    "MAPS_DIR",
    "Config",
    "ModbusDevice",
    "ModbusSettings",
    "Register",
    "Sds011Settings",
    "WxtSettings",
    "load_map",
]

MAPS_DIR = Path(__file__).parent / "maps"
PROTOCOLS = ("modbus", "sds011", "wxt")

Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]


class _Table(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class Register(_Table, kw_only=True):
    # Catalog metric the value becomes (docs/metrics.md), already in the catalog unit after
    # scale and offset; or x_<name> to forward it outside the catalog (unit and kind from
    # the gateway config's [metrics.x_<name>], else a gauge without unit).
    metric: str
    # 3 = read holding registers, 4 = read input registers.
    function: Literal[3, 4] = 3
    # Register address as sent on the wire (0-based PDU address).
    address: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    # How the register(s) hold the number.
    type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "uint16"
    # For 32-bit types: "big" = most significant register first.
    word_order: Literal["big", "little"] = "big"
    # Inside each register: "big" = high byte first (the Modbus default).
    byte_order: Literal["big", "little"] = "big"
    # value = raw * scale + offset
    scale: float = 1.0
    offset: float = 0.0


class _MapFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    description: str = ""
    registers: list[Register]


@cache
def load_map(name: str) -> tuple[Register, ...]:
    """A shipped register map, `drivers/serial/maps/<name>.toml`."""
    path = MAPS_DIR / f"{name}.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return tuple(msgspec.convert(raw, _MapFile, strict=True).registers)


def shipped_maps() -> list[str]:
    return sorted(p.stem for p in MAPS_DIR.glob("*.toml"))


class ModbusDevice(_Table, kw_only=True):
    # Modbus unit id (slave address) on this bus.
    unit: Annotated[int, msgspec.Meta(ge=1, le=247)]
    # Seconds between polls of this device.
    interval: Seconds = 10.0
    # A shipped register map (drivers/serial/maps/<map>.toml), e.g. "xy_md02".
    map: str = ""
    # Registers of this device (added to the map's, if both are given).
    registers: list[Register] = msgspec.field(default_factory=list)

    def all_registers(self) -> list[Register]:
        shipped = list(load_map(self.map)) if self.map else []
        return shipped + list(self.registers)


class ModbusSettings(_Table, kw_only=True):
    # Seconds to wait for an answer before the attempt counts as failed.
    timeout: Annotated[float, msgspec.Meta(gt=0, le=30)] = 0.5
    # Extra attempts of a request before the poll counts as a miss.
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    # Consecutive missed polls after which a device is marked offline.
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    # An offline device is probed after this many seconds, doubling up to the maximum.
    offline_backoff_initial: Seconds = 5.0
    offline_backoff_max: Seconds = 300.0
    # Devices polled on this bus, one request at a time.
    devices: list[ModbusDevice] = msgspec.field(default_factory=list)


class Sds011Settings(_Table, kw_only=True):
    # active: the sensor reports by itself (factory default, about once a second);
    # query: the gateway asks every `query_interval` seconds.
    mode: Literal["active", "query"] = "active"
    query_interval: Seconds = 10.0
    # query mode: seconds to wait for the data frame; a miss after that.
    timeout: Annotated[float, msgspec.Meta(gt=0, le=30)] = 2.0
    # active mode: no frame for this many seconds is a miss (checked every period).
    silence_timeout: Seconds = 10.0
    # Consecutive misses after which the sensor is marked offline.
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    # Send the reporting-mode command at start so the sensor is in `mode`.
    set_mode: bool = True


class WxtSettings(_Table, kw_only=True):
    # Device address character (aXU,A=...), "0" by factory default.
    address: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z]$")] = "0"
    # polled: the gateway sends aR0 every `poll_interval`; automatic: the station sends
    # composite messages by itself (aXU,M=A, interval set in the station).
    mode: Literal["polled", "automatic"] = "polled"
    poll_interval: Seconds = 10.0
    # Ask for the CRC-protected variant (ar0) in polled mode.
    use_crc: bool = False
    # polled: seconds to wait for the answer; automatic: silence that counts as a miss.
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 2.0
    # Consecutive misses after which the station is marked offline.
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3


class Config(DriverSettings, kw_only=True):
    # Serial device path; a stable /dev/serial/by-id/... link survives re-enumeration.
    port: str
    # Which protocol runs on the port: "modbus", "sds011" or "wxt".
    protocol: str
    baudrate: Annotated[int, msgspec.Meta(ge=50, le=4_000_000)] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    # After the port is lost (USB unplug) it is reopened after this delay, doubling up to
    # the maximum, until it is back at the same path.
    reopen_backoff_initial: Annotated[float, msgspec.Meta(gt=0, le=600)] = 0.5
    reopen_backoff_max: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    # Protocol tables: exactly the one named by `protocol` is used.
    modbus: ModbusSettings | None = None
    sds011: Sds011Settings | None = None
    wxt: WxtSettings | None = None

    def validate(self) -> list[str]:
        problems: list[str] = []
        if self.protocol not in PROTOCOLS:
            problems.append(
                f"protocol: expected one of {', '.join(PROTOCOLS)}, found {self.protocol!r}"
            )
            return problems
        for other in PROTOCOLS:
            if other != self.protocol and getattr(self, other) is not None:
                problems.append(
                    f"{other}: expected no [{other}] table with protocol = "
                    f"{self.protocol!r}, found one"
                )
        if not self.port:
            problems.append("port: expected a serial device path, found ''")
        if self.reopen_backoff_max < self.reopen_backoff_initial:
            problems.append(
                "reopen_backoff_max: expected >= reopen_backoff_initial "
                f"({self.reopen_backoff_initial}), found {self.reopen_backoff_max}"
            )
        if self.protocol == "modbus":
            problems.extend(self._validate_modbus())
        return problems

    def _validate_modbus(self) -> list[str]:
        settings = self.modbus
        if settings is None or not settings.devices:
            return ["modbus.devices: expected at least one [[...modbus.devices]] table, found none"]
        problems: list[str] = []
        if settings.offline_backoff_max < settings.offline_backoff_initial:
            problems.append(
                "modbus.offline_backoff_max: expected >= offline_backoff_initial "
                f"({settings.offline_backoff_initial}), found {settings.offline_backoff_max}"
            )
        seen: set[int] = set()
        maps = shipped_maps()
        for i, device in enumerate(settings.devices):
            where = f"modbus.devices[{i}]"
            if device.unit in seen:
                problems.append(f"{where}.unit: expected a unique unit id, found {device.unit} twice")
            seen.add(device.unit)
            if device.map and device.map not in maps:
                problems.append(
                    f"{where}.map: expected one of {', '.join(maps)}, found {device.map!r}"
                )
                continue
            if not device.map and not device.registers:
                problems.append(f"{where}: expected `map` or [[registers]], found neither")
            for j, register in enumerate(device.registers):
                if register.metric not in CATALOG and not (
                    len(register.metric) <= MAX_NAME_LENGTH and FORWARDED_NAME.fullmatch(register.metric)
                ):
                    problems.append(
                        f"{where}.registers[{j}].metric: expected a catalog metric (docs/metrics.md) "
                        f"or x_<lower_case_words> to forward it outside the catalog, found "
                        f"{register.metric!r}"
                    )
                if register.address + (2 if register.type.endswith("32") else 1) > 65536:
                    problems.append(
                        f"{where}.registers[{j}].address: expected the value to end by 65535, "
                        f"found {register.address} for {register.type}"
                    )
            metrics = [r.metric for r in device.all_registers()]
            for metric in sorted({m for m in metrics if metrics.count(m) > 1}):
                problems.append(
                    f"{where}.registers: expected each metric once per device, found {metric!r} twice"
                )
        return problems

    def protocol_settings(self) -> ModbusSettings | Sds011Settings | WxtSettings:
        """The table of the chosen protocol, defaults where it was left out."""
        chosen: ModbusSettings | Sds011Settings | WxtSettings | None = getattr(self, self.protocol)
        if chosen is None:
            chosen = {"sds011": Sds011Settings, "wxt": WxtSettings, "modbus": ModbusSettings}[
                self.protocol
            ]()
        return chosen
