"""What every protocol session on a port shares: device health, status readings, events."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable

from drivers.serial.config import Config
from drivers.serial.health import DeviceHealth
from gateway.driver import DriverContext
from gateway.errors import DecodeError
from gateway.model import Reading

__all__ = ["Session", "port_name"]


def port_name(path: str) -> str:
    """`serial:<port>/<unit>` uses the basename: /dev/serial/by-id/usb-FTDI_x -> usb-FTDI_x."""
    return os.path.basename(path.rstrip("/")) or path


class Session(abc.ABC):
    """One protocol on one open port. `serve()` runs until the port is lost, then raises
    PortUnavailable; the driver reopens the port and calls `serve()` again."""

    def __init__(self, config: Config, ctx: DriverContext, on_open: Callable[[], None]) -> None:
        self.config = config
        self.ctx = ctx
        self.on_open = on_open
        self.port = port_name(config.port)
        self.healths: dict[str, DeviceHealth] = {}

    def device(self, suffix: str) -> str:
        return f"serial:{self.port}/{suffix}"

    def health(self, device: str, offline_after: int, backoff: tuple[float, float]) -> DeviceHealth:
        known = self.healths.get(device)
        if known is None:
            known = self.healths[device] = DeviceHealth(
                device,
                offline_after=offline_after,
                backoff_initial=backoff[0],
                backoff_max=backoff[1],
            )
        return known

    def answered(self, health: DeviceHealth, ts: float) -> None:
        event = health.success(ts)
        if event is not None:
            self.ctx.event(event)
            self.ctx.log.info("device_online", device=health.device)
        self.ctx.emit(Reading(health.device, "sensor_status", "ok", ts))

    def missed(self, health: DeviceHealth, ts: float, reason: str) -> None:
        self.ctx.count("misses")
        event = health.miss(ts, reason)
        if event is not None:
            self.ctx.event(event)
            self.ctx.count("devices_offline")
            self.ctx.log.warning(
                "device_offline", device=health.device, misses=health.misses, reason=reason
            )
        if not health.online:
            self.ctx.emit(Reading(health.device, "sensor_status", "offline", ts))

    def port_lost(self, ts: float, reason: str) -> None:
        for health in self.healths.values():
            event = health.port_lost(ts, reason)
            if event is not None:
                self.ctx.event(event)
                self.ctx.emit(Reading(health.device, "sensor_status", "offline", ts))

    def bad_data(self, error: DecodeError) -> None:
        self.ctx.decode_error(error, port=self.config.port)

    @abc.abstractmethod
    async def serve(self) -> None:
        """Open the port, run the protocol; raise PortUnavailable when the port goes."""
