"""bleak scanner and BlueZ adapter control: the BLE driver's I/O.

bleak's BlueZ backend talks to bluetoothd over the system D-Bus (`DBUS_SYSTEM_BUS_ADDRESS` when
set), which is what lets the tests run it against python-dbusmock's bluez5 template. The adapter
power cycle goes straight to `org.bluez.Adapter1.Powered` through dbus-fast, the D-Bus library
bleak itself uses. bleak and dbus-fast exceptions are translated to DriverError here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, Literal

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDBusError, BleakError
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from gateway.backoff import Backoff
from gateway.errors import DriverError

__all__ = ["OR_PATTERNS", "AdapterControl", "Scanner", "TRANSIENT_BLUEZ_ERRORS"]

# BlueZ errors that mean "not now" (doc/org.bluez.Adapter.rst): retried, never fatal.
TRANSIENT_BLUEZ_ERRORS: Final = frozenset(
    {"org.bluez.Error.InProgress", "org.bluez.Error.NotReady", "org.bluez.Error.Busy", "org.bluez.Error.Failed"}
)
_BLUEZ: Final = "org.bluez"
_ADAPTER_IFACE: Final = "org.bluez.Adapter1"

# Passive scanning: BlueZ's advertisement monitor only reports advertisements matching one of
# these (AD type, offset, bytes): Ruuvi's company id 0x0499 and the 16-bit service-data UUIDs
# 0xFCD2 (BTHome) and 0x181A (pvvx/atc1441), all little-endian on air.
OR_PATTERNS: Final = [
    OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\x99\x04"),
    OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xd2\xfc"),
    OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\x1a\x18"),
]

AdvertisementCallback = Callable[[str, dict[int, bytes], dict[str, bytes], int | None], None]


def _describe(error: BaseException) -> str:
    if isinstance(error, BleakDBusError):
        return error.dbus_error
    return f"{type(error).__name__}: {error}"


class Scanner:
    """One BleakScanner, started and stopped on demand; advertisements go to `on_advertisement`."""

    def __init__(
        self,
        on_advertisement: AdvertisementCallback,
        *,
        adapter: str = "",
        scanning_mode: Literal["active", "passive"] = "active",
        start_retries: int = 5,
        retry_delay: float = 0.5,
        on_transient: Callable[[str], None] | None = None,
    ) -> None:
        self._on_advertisement = on_advertisement
        self._adapter = adapter
        self._mode = scanning_mode
        self._start_retries = start_retries
        self._retry_delay = retry_delay
        self._on_transient = on_transient or (lambda reason: None)
        self._scanner: BleakScanner | None = None

    def _callback(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self._on_advertisement(device.address, adv.manufacturer_data, adv.service_data, adv.rssi)

    @property
    def running(self) -> bool:
        return self._scanner is not None

    async def start(self) -> None:
        """Start scanning; BlueZ InProgress/NotReady/Busy are retried, then DriverError."""
        bluez: BlueZScannerArgs = {}
        if self._adapter:
            bluez["adapter"] = self._adapter
        if self._mode == "passive":
            bluez["or_patterns"] = list(OR_PATTERNS)
        last: BaseException | None = None
        # the gateway's backoff between tries (BlueZ answers InProgress while a previous
        # discovery is still being torn down)
        backoff = Backoff(self._retry_delay, self._retry_delay * (self._start_retries + 1))
        for attempt in range(self._start_retries + 1):
            scanner = BleakScanner(self._callback, scanning_mode=self._mode, bluez=bluez)
            try:
                await scanner.start()
            except BleakDBusError as error:
                last = error
                if error.dbus_error not in TRANSIENT_BLUEZ_ERRORS:
                    raise DriverError(f"BlueZ refused to scan: {_describe(error)}") from error
                self._on_transient(error.dbus_error)
            except BleakError as error:  # no adapter, adapter off, passive unsupported
                last = error
                self._on_transient(type(error).__name__)
            except (OSError, EOFError) as error:  # D-Bus socket gone (bluetoothd/dbus restart)
                raise DriverError(f"system D-Bus unavailable: {_describe(error)}") from error
            else:
                self._scanner = scanner
                return
            if attempt < self._start_retries:
                await asyncio.sleep(backoff.next_delay())
        raise DriverError(f"scanner did not start after {self._start_retries + 1} tries: {_describe(last or Exception())}")

    async def stop(self) -> None:
        """Stop scanning; errors are reported as transient (the scan may already be gone)."""
        scanner, self._scanner = self._scanner, None
        if scanner is None:
            return
        try:
            await scanner.stop()
        except (BleakError, OSError, EOFError, AssertionError) as error:
            # After a power cycle bluetoothd has ended the discovery session itself; StopDiscovery
            # then fails (or bleak's bus is gone). Either way the scan is stopped.
            self._on_transient(_describe(error))


class AdapterControl:
    """Power-cycles the adapter through BlueZ's Adapter1.Powered property."""

    def __init__(self, adapter: str = "") -> None:
        self._adapter = adapter

    async def _adapter_path(self, bus: MessageBus) -> str:
        if self._adapter:
            return f"/org/bluez/{self._adapter}"
        reply = await bus.call(
            Message(destination=_BLUEZ, path="/", interface="org.freedesktop.DBus.ObjectManager",
                    member="GetManagedObjects")
        )
        self._check(reply)
        paths: list[str] = sorted(
            path for path, ifaces in reply.body[0].items() if _ADAPTER_IFACE in ifaces
        )
        if not paths:
            raise DriverError("no Bluetooth adapter on the system bus")
        return paths[0]

    @staticmethod
    def _check(reply: Any) -> None:
        if reply.message_type == MessageType.ERROR:
            raise BleakDBusError(reply.error_name, reply.body)

    async def _set_powered(self, bus: MessageBus, path: str, on: bool) -> None:
        reply = await bus.call(
            Message(destination=_BLUEZ, path=path, interface="org.freedesktop.DBus.Properties",
                    member="Set", signature="ssv", body=[_ADAPTER_IFACE, "Powered", Variant("b", on)])
        )
        self._check(reply)

    async def power_cycle(self, off_seconds: float) -> str:
        """Powered=false, wait, Powered=true. Returns the adapter path; raises DriverError."""
        try:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, EOFError) as error:
            raise DriverError(f"system D-Bus unavailable: {_describe(error)}") from error
        try:
            path = await self._adapter_path(bus)
            await self._set_powered(bus, path, False)
            await asyncio.sleep(off_seconds)  # the adapter stays off this long, by design
            await self._set_powered(bus, path, True)
            return path
        except BleakDBusError as error:
            raise DriverError(f"power cycle failed: {error.dbus_error}") from error
        finally:
            bus.disconnect()
