"""What the gateway's BLE scanner could not have heard, measured on the mock BlueZ's bus.

bleak delivers an advertisement only to a scanner that is registered at the moment it reads the
D-Bus signal (bleak/backends/bluezdbus/manager.py: `active_scan` registers the callback, then
calls SetDiscoveryFilter and StartDiscovery; its `stop` removes the callback, then calls
StopDiscovery). The BLE simulator only advertises while it believes the adapter is discovering,
but that belief comes from a signal: when the gateway stops or restarts its scanner (the stall
watchdog, a driver restart) while a round of advertisements is queued at the mock, those go out
after bleak has let go, and on a busy machine both repeats of a measurement can fall there.

This watch sees the private bus as the bus daemon routes it (org.freedesktop.DBus.Monitoring
.BecomeMonitor, one total order): the gateway's discovery calls on each adapter and every
advertisement signal the mock sends. Between the gateway's SetDiscoveryFilter/StartDiscovery
call and its StopDiscovery call (or an error answer to the start) the scanner is listening; an
advertisement routed outside that span reaches no scanner. A measurement (a tag's new payload and
its RSSI-only repeats) none of whose advertisements went out while listening is a named loss,
`not_scanning`, never slack.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, Final

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

__all__ = ["ScanWatch", "TagAirtime"]

_DEVICE_IFACE: Final = "org.bluez.Device1"
_ADAPTER_IFACE: Final = "org.bluez.Adapter1"
_MARK_IFACE: Final = "org.edgegateway.CityWatch"
_RULES: Final = [
    "type='signal',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'",
    "type='signal',interface='org.freedesktop.DBus.ObjectManager',member='InterfacesAdded'",
    f"type='method_call',interface='{_ADAPTER_IFACE}'",
    "type='error'",
    f"type='signal',interface='{_MARK_IFACE}'",
]


@dataclass
class TagAirtime:
    """One tag as the bus saw it: per measurement, whether any of its advertisements went out
    while the gateway's scanner listened."""

    heard: list[bool] = field(default_factory=list)
    last_payload: Any = None


def _payload(props: dict[str, Any]) -> tuple[Any, Any] | None:
    manufacturer = props.get("ManufacturerData")
    service = props.get("ServiceData")
    if manufacturer is None and service is None:
        return None
    return (_plain(manufacturer), _plain(service))


def _plain(value: Any) -> Any:
    if value is None:
        return None
    inner = getattr(value, "value", value)
    return tuple(sorted((key, bytes(getattr(v, "value", v))) for key, v in inner.items()))


class ScanWatch:
    """Monitor of a private bus: `await start(address)`, `await sync()`, `stop()`."""

    def __init__(self) -> None:
        self.tags: dict[str, TagAirtime] = {}  # device object path -> airtime
        self.listening: dict[str, bool] = {}  # adapter path -> the gateway's scanner listens
        self.advertisements = 0
        self.unheard_advertisements = 0
        self._monitor: MessageBus | None = None
        self._marker: MessageBus | None = None
        self._marks = itertools.count(1)
        self._seen_mark = 0
        self._mark_event = asyncio.Event()
        self._pending: dict[tuple[str, int], str] = {}  # start calls awaiting their answer

    async def start(self, address: str) -> None:
        monitor = await MessageBus(bus_address=address).connect()
        own = monitor.unique_name

        def handle(message: Message) -> bool:
            if message.destination == own and message.message_type in (MessageType.METHOD_RETURN,
                                                                        MessageType.ERROR):
                return False  # the answer to BecomeMonitor itself
            self._observe(message)
            return True  # a monitor never answers: anything it sends gets it disconnected

        monitor.add_message_handler(handle)
        reply = await monitor.call(
            Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus.Monitoring", member="BecomeMonitor",
                    signature="asu", body=[_RULES, 0])
        )
        if reply.message_type == MessageType.ERROR:
            monitor.disconnect()
            raise RuntimeError(f"cannot monitor the private bus: {reply.error_name} {reply.body}")
        self._monitor = monitor
        self._marker = await MessageBus(bus_address=address).connect()

    def _observe(self, message: Message) -> None:
        kind = message.message_type
        if kind == MessageType.METHOD_CALL and message.interface == _ADAPTER_IFACE:
            path = message.path or ""
            if message.member == "StopDiscovery":
                self.listening[path] = False
                self._pending = {key: p for key, p in self._pending.items() if p != path}
            elif message.member == "StartDiscovery" or (message.member == "SetDiscoveryFilter" and message.body
                                                         and message.body[0]):
                # bleak registered its callback just before this call (active_scan)
                self.listening[path] = True
                self._pending[(message.sender or "", message.serial)] = path
            return
        if kind == MessageType.ERROR:
            path = self._pending.pop((message.destination or "", message.reply_serial), "")
            if path:
                self.listening[path] = False  # bleak drops its callback when the start fails
            return
        if kind != MessageType.SIGNAL:
            return
        if message.interface == _MARK_IFACE:
            self._seen_mark = max(self._seen_mark, int(message.body[0]))
            self._mark_event.set()
            return
        if message.member == "PropertiesChanged":
            if message.body[0] != _DEVICE_IFACE:
                return
            self._advertised(message.path or "", message.body[1])
        elif message.member == "InterfacesAdded":
            interfaces = message.body[1]
            if _DEVICE_IFACE in interfaces:
                self._advertised(message.body[0], interfaces[_DEVICE_IFACE])

    def _advertised(self, device_path: str, props: dict[str, Any]) -> None:
        adapter = device_path.rsplit("/", 1)[0]
        heard = self.listening.get(adapter, False)
        self.advertisements += 1
        if not heard:
            self.unheard_advertisements += 1
        tag = self.tags.setdefault(device_path, TagAirtime())
        payload = _payload(props)
        if payload is not None and payload != tag.last_payload:
            tag.last_payload = payload
            tag.heard.append(heard)  # a new measurement begins with a new payload
        elif tag.heard:
            tag.heard[-1] = tag.heard[-1] or heard  # a repeat of the current measurement

    async def sync(self, within: float = 10.0) -> bool:
        """Return once the monitor has read everything the bus routed before this call."""
        if self._marker is None or self._monitor is None:
            return False
        mark = next(self._marks)
        self._marker.send(Message.new_signal("/org/edgegateway/city", _MARK_IFACE, "Mark", "u", [mark]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._seen_mark < mark:
            self._mark_event.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._mark_event.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def unheard_measurements(self, device_path: str, measurements: int) -> int:
        """Of the first `measurements` measurements of a tag (what the simulator counts as
        sent), those none of whose advertisements went out while the scanner listened."""
        tag = self.tags.get(device_path)
        if tag is None:
            return 0
        return sum(1 for heard in tag.heard[:measurements] if not heard)

    def measurements_seen(self, device_path: str) -> int:
        tag = self.tags.get(device_path)
        return len(tag.heard) if tag is not None else 0

    def stop(self) -> None:
        for bus in (self._monitor, self._marker):
            if bus is not None:
                bus.disconnect()
        self._monitor = self._marker = None
