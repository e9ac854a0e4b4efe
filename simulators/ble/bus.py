"""A private system D-Bus (dbus-daemon) with python-dbusmock's bluez5 template on it.

Nothing touches the machine's real bus: the daemon listens on a socket in a temporary folder and
whoever should talk to it (bleak, through dbus-fast) gets `DBUS_SYSTEM_BUS_ADDRESS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

__all__ = ["PrivateBluez"]

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""


class PrivateBluez:
    """dbus-daemon + `python -m dbusmock --template bluez5`, started and stopped together."""

    def __init__(self) -> None:
        self.workdir: Path | None = None
        self.address = ""
        self._daemon: asyncio.subprocess.Process | None = None
        self._mock: asyncio.subprocess.Process | None = None

    async def start(self, start_timeout: float = 15.0) -> str:
        dbus_daemon = shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"
        self.workdir = Path(tempfile.mkdtemp(prefix="blesim-"))  # short path: sun_path limit
        config = self.workdir / "system.conf"
        config.write_text(_CONFIG.format(socket=self.workdir / "system_bus_socket"))
        self._daemon = await asyncio.create_subprocess_exec(
            dbus_daemon, f"--config-file={config}", "--nofork", "--print-address=1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        assert self._daemon.stdout is not None
        line = await asyncio.wait_for(self._daemon.stdout.readline(), start_timeout)
        self.address = line.decode().strip()
        if not self.address:
            raise RuntimeError("dbus-daemon printed no address")
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address)
        self._mock = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbusmock", "--system", "--template", "bluez5",
            "--logfile", str(self.workdir / "dbusmock.log"),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await self._wait_for_name("org.bluez", start_timeout)
        return self.address

    async def _wait_for_name(self, name: str, within: float) -> None:
        bus = await MessageBus(bus_address=self.address).connect()
        try:
            deadline = asyncio.get_running_loop().time() + within
            while True:
                reply = await bus.call(
                    Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                            interface="org.freedesktop.DBus", member="NameHasOwner", signature="s", body=[name])
                )
                if reply.message_type == MessageType.METHOD_RETURN and reply.body[0]:
                    return
                if self._mock is not None and self._mock.returncode is not None:
                    raise RuntimeError(f"dbusmock exited with {self._mock.returncode}")
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"{name} did not appear on the private bus")
                await asyncio.sleep(0.05)  # poll step while the mock process starts
        finally:
            bus.disconnect()

    async def stop(self) -> None:
        for process in (self._mock, self._daemon):
            if process is None or process.returncode is not None:
                continue
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._mock = self._daemon = None
        if self.workdir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.workdir)
