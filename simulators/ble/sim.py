"""BLE tags on a mock BlueZ, seen by the gateway through bleak's real BlueZ backend.

How the mock is driven mirrors what bluetoothd does and what bleak's BlueZ manager listens to
(bleak/backends/bluezdbus/manager.py, `_parse_msg`):
- a tag heard for the first time becomes an org.bluez.Device1 object announced with
  ObjectManager.InterfacesAdded (bleak runs its advertisement callbacks for it at once);
- every later advertisement is a PropertiesChanged on that object carrying RSSI and, when the
  payload changed, ManufacturerData (a{qv}) / ServiceData (a{sv}); bleak merges the change into
  its cached properties and calls back with the whole set.
The template's AddDevice types ManufacturerData/ServiceData wrongly, so devices are added with
AddObject and explicitly typed dictionaries (design.md). Advertisements flow only while the
adapter is powered and discovering (active scan) like real BlueZ.

Many tags: a round of advertisements is one task per tag, but at most `max_in_flight` D-Bus
calls are outstanding at a time. dbus-fast (5.2) treats a full socket send buffer as fatal:
`_MessageWriter.write_callback` lets the BlockingIOError (EAGAIN) of `socket.send` escape and
the bus closes itself. An unbounded gather over ~160+ tags queued enough calls at once to fill
the buffer while dbus-daemon and the mock caught up. A failed call is still survived: it is
counted in `errors` by exception type (the tag's advertisement is not counted as sent), the
connection is reopened when it died, and the next round goes on.

Stall modes, for the gateway's recovery: "scanner" stops advertisements until discovery is
restarted (StopDiscovery + StartDiscovery), "adapter" until the adapter is power-cycled
(Powered false -> true), "forever" until `resume()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final, Literal

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from simulators.ble.bus import PrivateBluez
from simulators.ble.tags import SimTag

__all__ = ["BleSimulator", "StallMode"]

StallMode = Literal["scanner", "adapter", "forever"]

_log = logging.getLogger(__name__)

_MOCK: Final = "org.freedesktop.DBus.Mock"
_BLUEZ_MOCK: Final = "org.bluez.Mock"
_ADAPTER_IFACE: Final = "org.bluez.Adapter1"
_DEVICE_IFACE: Final = "org.bluez.Device1"
_PROPS: Final = "org.freedesktop.DBus.Properties"
_SIM_IFACE: Final = "org.edgegateway.Simulator"

# StartDiscovery replaced so the simulator can make BlueZ answer InProgress a few times, the
# way bluetoothd does while a previous discovery is still being torn down.
_START_DISCOVERY: Final = """
fails = getattr(self, 'sim_fail_starts', 0)
if fails > 0:
    self.sim_fail_starts = fails - 1
    raise dbus.exceptions.DBusException('Operation already in progress', name='org.bluez.Error.InProgress')
self.props['org.bluez.Adapter1']['Discovering'] = dbus.Boolean(True)
self.EmitSignal('org.freedesktop.DBus.Properties', 'PropertiesChanged', 'sa{sv}as',
    ['org.bluez.Adapter1', {'Discovering': dbus.Boolean(True, variant_level=1)}, dbus.Array([], signature='s')])
"""


def _dict_variant(signature: str, data: dict[Any, bytes]) -> Variant:
    return Variant(signature, {key: Variant("ay", value) for key, value in data.items()})


class BleSimulator:
    """N tags advertising on a private mock BlueZ. Library use: `await start()`, `await stop()`."""

    def __init__(
        self,
        tags: Iterable[SimTag],
        *,
        interval: float = 0.5,
        repeats: int = 3,
        adapter: str = "hci0",
        bluez: PrivateBluez | None = None,
        seed: int = 7,
        require_discovery: bool = True,
        paused: bool = False,
        max_in_flight: int = 32,
    ) -> None:
        self.tags = list(tags)
        self.interval = interval
        self.repeats = max(1, repeats)  # advertisements per measurement
        self.adapter_name = adapter
        self.adapter_path = f"/org/bluez/{adapter}"
        self.bluez = bluez if bluez is not None else PrivateBluez()
        self._owns_bluez = bluez is None
        self._bus: MessageBus | None = None
        self._task: asyncio.Task[None] | None = None
        self._random = random.Random(seed)
        self._announced: set[str] = set()
        self._last_payload: dict[str, tuple[dict[int, bytes], dict[str, bytes]]] = {}
        self._repeated: dict[str, int] = {}  # deliveries of each tag's current measurement
        self.powered = True
        self.discovering = False
        # paused: silent from the start until `resume()`, so a test can start its scanner first
        # and account for every advertisement.
        self.stall_mode: StallMode | None = "forever" if paused else None
        self._round_lock = asyncio.Lock()  # held while a round of advertisements is in flight
        # Bounds the D-Bus calls queued on the connection (see the module docstring).
        self._in_flight = asyncio.Semaphore(max(1, max_in_flight))
        self.errors: Counter[str] = Counter()  # failed advertisements by exception type
        self.late_rounds = 0  # rounds that ended after the next one was due
        self.slowest_round = 0.0  # seconds
        # Active scanning needs StartDiscovery; a passive scan (advertisement monitor) does not.
        self.require_discovery = require_discovery
        self.stalled_ticks = 0
        self.discovery_starts = 0
        self.power_cycles = 0
        self.advertisements_sent = 0

    @property
    def address(self) -> str:
        return self.bluez.address

    @property
    def advertising(self) -> bool:
        """The advertising task is alive (paused or not): nothing has ended it."""
        return self._task is not None and not self._task.done()

    @property
    def delivering(self) -> bool:
        scanning = self.discovering or not self.require_discovery
        return self.powered and scanning and self.stall_mode is None

    # -- D-Bus plumbing ---------------------------------------------------------------------

    async def _call(self, path: str, interface: str, member: str, signature: str = "", body: list[Any] | None = None) -> Any:
        async with self._in_flight:
            bus = self._bus
            if bus is None or not bus.connected:
                raise ConnectionError("simulator's D-Bus connection is closed")
            reply = await bus.call(
                Message(destination="org.bluez", path=path, interface=interface, member=member,
                        signature=signature, body=body or [])
            )
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{interface}.{member} on {path}: {reply.error_name} {reply.body}")
        return reply.body

    async def start(self) -> None:
        if self._owns_bluez:
            await self.bluez.start()
        await self._connect()
        await self._add_adapter()
        self._task = asyncio.create_task(self._advertise(), name="ble-sim-advertise")

    async def _connect(self) -> None:
        """Open the simulator's connection and follow the adapter's property changes on it."""
        bus = await MessageBus(bus_address=self.bluez.address).connect()
        bus.add_message_handler(self._on_signal)
        match = (f"type='signal',interface='{_PROPS}',member='PropertiesChanged',"
                 f"path='{self.adapter_path}'")
        await bus.call(
            Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus", member="AddMatch", signature="s", body=[match])
        )
        self._bus = bus

    async def _add_adapter(self) -> None:
        await self._call("/org/bluez", _BLUEZ_MOCK, "AddAdapter", "ss", [self.adapter_name, "edge-gateway-sim"])
        await self._call(self.adapter_path, _MOCK, "AddMethod", "sssss",
                         [_ADAPTER_IFACE, "StartDiscovery", "", "", _START_DISCOVERY])
        await self._call(self.adapter_path, _MOCK, "AddMethod", "sssss",
                         [_SIM_IFACE, "FailStarts", "i", "", "self.sim_fail_starts = args[0]"])
        self.powered, self.discovering = True, False

    async def unplug(self) -> None:
        """The USB adapter disappears: adapter and its devices leave BlueZ (InterfacesRemoved)."""
        self.powered = self.discovering = False
        await self._call("/org/bluez", _BLUEZ_MOCK, "RemoveAdapterWithDevices", "s", [self.adapter_name])
        self._announced.clear()
        self._last_payload.clear()

    async def replug(self) -> None:
        """The adapter comes back, powered, not discovering; tags are announced anew."""
        await self._add_adapter()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None
        if self._owns_bluez:
            await self.bluez.stop()

    async def __aenter__(self) -> BleSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what the gateway does to the adapter -------------------------------------------------

    def _on_signal(self, message: Message) -> None:
        if message.message_type != MessageType.SIGNAL or message.path != self.adapter_path:
            return
        if message.member != "PropertiesChanged" or message.body[0] != _ADAPTER_IFACE:
            return
        changed = message.body[1]
        if "Discovering" in changed:
            now = bool(changed["Discovering"].value)
            if now and not self.discovering:
                self.discovery_starts += 1
                if self.stall_mode == "scanner":
                    self.stall_mode = None
            self.discovering = now
        if "Powered" in changed:
            now = bool(changed["Powered"].value)
            if not now:
                # bluetoothd ends every discovery session when the controller powers down.
                self.discovering = False
                asyncio.get_running_loop().create_task(self._set_adapter("Discovering", Variant("b", False)))
            elif not self.powered:
                self.power_cycles += 1
                if self.stall_mode in ("scanner", "adapter"):
                    self.stall_mode = None
            self.powered = now

    async def _set_adapter(self, name: str, value: Variant) -> None:
        with contextlib.suppress(RuntimeError):
            await self._call(self.adapter_path, _MOCK, "UpdateProperties", "sa{sv}", [_ADAPTER_IFACE, {name: value}])

    def stall(self, mode: StallMode = "scanner") -> None:
        """Stop delivering advertisements until the recovery `mode` names happens."""
        self.stall_mode = mode

    def resume(self) -> None:
        self.stall_mode = None

    async def pause(self) -> None:
        """Stop advertising and return once no advertisement is in flight, so every tag's
        `sent` and `advertisements` are final until `resume()`."""
        self.stall_mode = "forever"
        async with self._round_lock:
            pass

    def drop_connection(self) -> None:
        """Close the simulator's own D-Bus connection, the way dbus-fast closes it on an error:
        the next round's advertisements fail, are counted in `errors`, and it reconnects."""
        if self._bus is not None:
            self._bus.disconnect()

    async def fail_next_discovery_starts(self, count: int) -> None:
        """Make the next `count` StartDiscovery calls fail with org.bluez.Error.InProgress."""
        await self._call(self.adapter_path, _SIM_IFACE, "FailStarts", "i", [count])

    async def send(self, tag: SimTag) -> None:
        """Deliver `tag`'s current advertisement once, stalled or not, without counting it as
        a measurement (replay and tamper tests)."""
        await self._deliver(tag)

    # -- advertising ------------------------------------------------------------------------

    def _device_path(self, tag: SimTag) -> str:
        return f"{self.adapter_path}/dev_{tag.mac.replace(':', '_')}"

    async def _announce(self, tag: SimTag, rssi: int, manufacturer: dict[int, bytes], service: dict[str, bytes]) -> None:
        path = self._device_path(tag)
        uuids = sorted(service)
        props = {
            "Address": Variant("s", tag.mac),
            "AddressType": Variant("s", "random"),
            "Alias": Variant("s", f"{tag.format}-{tag.index}"),
            "Name": Variant("s", f"{tag.format}-{tag.index}"),
            "Adapter": Variant("o", self.adapter_path),
            "Paired": Variant("b", False),
            "Bonded": Variant("b", False),
            "Trusted": Variant("b", False),
            "Blocked": Variant("b", False),
            "Connected": Variant("b", False),
            "LegacyPairing": Variant("b", False),
            "ServicesResolved": Variant("b", False),
            "UUIDs": Variant("as", uuids),
            "RSSI": Variant("n", rssi),
            "ManufacturerData": _dict_variant("a{qv}", manufacturer),
            "ServiceData": _dict_variant("a{sv}", service),
        }
        await self._call("/", _MOCK, "AddObject", "ssa{sv}a(ssss)", [path, _DEVICE_IFACE, props, []])
        await self._call(
            "/", _MOCK, "EmitSignal", "sssav",
            ["org.freedesktop.DBus.ObjectManager", "InterfacesAdded", "oa{sa{sv}}",
             [Variant("o", path), Variant("a{sa{sv}}", {_DEVICE_IFACE: props})]],
        )
        self._announced.add(tag.mac)

    async def _deliver(self, tag: SimTag) -> None:
        manufacturer, service = tag.advertisement()
        rssi = -50 - self._random.randrange(40)
        if tag.mac not in self._announced:
            await self._announce(tag, rssi, manufacturer, service)
        else:
            changed: dict[str, Variant] = {"RSSI": Variant("n", rssi)}
            # bluetoothd only signals what changed; an unchanged payload rides along implicitly.
            if self._last_payload.get(tag.mac) != (manufacturer, service):
                if manufacturer:
                    changed["ManufacturerData"] = _dict_variant("a{qv}", manufacturer)
                if service:
                    changed["ServiceData"] = _dict_variant("a{sv}", service)
            await self._call(self._device_path(tag), _MOCK, "UpdateProperties", "sa{sv}", [_DEVICE_IFACE, changed])
        self._last_payload[tag.mac] = (manufacturer, service)

    async def _advertise_once(self, tag: SimTag) -> None:
        await self._deliver(tag)
        tag.advertisements += 1
        self.advertisements_sent += 1
        repeated = self._repeated.get(tag.mac, 0)
        if repeated == 0:
            tag.sent.append(tag.values())  # first delivery of this measurement
        repeated += 1
        if repeated >= self.repeats:
            tag.advance()
            tag.counter += 1
            repeated = 0
        self._repeated[tag.mac] = repeated

    async def _round(self) -> None:
        """One advertisement of every tag; a failure is counted, never ends the simulator."""
        results = await asyncio.gather(*(self._advertise_once(tag) for tag in self.tags), return_exceptions=True)
        failed = [result for result in results if isinstance(result, BaseException)]
        for error in failed:
            if not isinstance(error, Exception):
                raise error  # cancellation and the like
            cause = type(error).__name__
            if not self.errors[cause]:
                _log.warning("BLE simulator: advertisement failed (logged once per cause): %r", error)
            self.errors[cause] += 1
        if failed and (self._bus is None or not self._bus.connected):
            with contextlib.suppress(OSError, EOFError):
                await self._connect()

    async def _advertise(self) -> None:
        # Rounds start on a fixed timetable (start + k * interval), so the time a round takes
        # does not stretch the advertising interval; a round that ends past the next start is
        # counted in `late_rounds` and the next one starts at once (no burst to catch up).
        loop = asyncio.get_running_loop()
        next_start = loop.time()
        while True:
            if self.delivering:
                async with self._round_lock:
                    began = loop.time()
                    await self._round()
                    self.slowest_round = max(self.slowest_round, loop.time() - began)
            else:
                self.stalled_ticks += 1
            next_start += self.interval
            delay = next_start - loop.time()
            if delay < 0:
                self.late_rounds += 1
                next_start = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)  # until the next advertising interval starts
