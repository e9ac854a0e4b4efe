"""The serial driver: one port, one protocol session, and the port's unplug/replug cycle.

A lost port (USB adapter unplugged: reads fail with EIO) is not a driver failure: the devices
on it are marked offline, the loss is logged once, and the same path is reopened with the
gateway's backoff (doubling, jittered) until it is back (a udev by-id link reappears at the
same path).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from drivers.serial.config import Config
from drivers.serial.errors import PortUnavailable
from drivers.serial.session import Session
from gateway.backoff import Backoff
from gateway.driver import Driver, DriverContext

__all__ = ["SerialDriver"]


def _session_class(protocol: str) -> type[Session]:
    if protocol == "modbus":
        from drivers.serial.modbus import ModbusSession

        return ModbusSession
    from drivers.serial.uart import Sds011Session, WxtSession

    return {"sds011": Sds011Session, "wxt": WxtSession}[protocol]


class SerialDriver(Driver[Config]):
    type_name: ClassVar[str] = "serial"

    def __init__(self, config: Config, ctx: DriverContext) -> None:
        super().__init__(config, ctx)
        self.session = _session_class(config.protocol)(config, ctx, self._opened)
        self.backoff = Backoff(config.reopen_backoff_initial, config.reopen_backoff_max)
        self.port_down = False
        self.opened = asyncio.Event()  # set while the port is open (tests, health)

    def _opened(self) -> None:
        self.backoff.reset()
        self.opened.set()
        if self.port_down:
            self.port_down = False
            self.ctx.count("port_reopened")
            self.ctx.log.info("port_reopened", port=self.config.port)
        else:
            self.ctx.log.info("port_opened", port=self.config.port, protocol=self.config.protocol)

    async def run(self) -> None:
        while True:
            try:
                await self.session.serve()
                raise PortUnavailable(self.config.port, "session ended")  # pragma: no cover
            except PortUnavailable as error:
                self.opened.clear()
                if not self.port_down:
                    self.port_down = True
                    self.ctx.count("port_lost")
                    self.ctx.log.warning(
                        "port_unavailable",
                        port=self.config.port,
                        reason=error.reason,
                        note="reopening with backoff; logged once until back",
                    )
                    self.session.port_lost(self.ctx.clock(), error.reason)
                else:
                    self.ctx.count("port_reopen_failures")
            await asyncio.sleep(self.backoff.next_delay())
