"""Ports above descriptor 1023 (issue 12): select() cannot take such a descriptor, so a port
opened or reopened while more than 1,024 descriptors are in use must be read without it.

Each test first opens 1,100 sockets (raising the soft RLIMIT_NOFILE for the test process if
needed, restored afterwards), so every descriptor the simulator and the driver open lands above
1023; it then runs a simulator on a real pty through the driver, unplugs and replugs it, and
checks the exact values on both sides of the unplug, that nothing reached the event loop's
exception handler, and that the port really sat above the select() ceiling.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.serial.config import Config
from simulators.serial import ModbusBusSim, Sds011Sim, SimUnit, WxtSim
from tests.drivers.serial.conftest import Harness, make_config, running
from tests.support.descriptors import SELECT_CEILING, crowded_descriptors
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.timeout(60)

@pytest.fixture
def crowded() -> Iterator[None]:
    with crowded_descriptors():
        yield


def descriptors_on(path: str) -> list[int]:
    """This process's descriptors open on `path` (the simulator's and the driver's)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == path:
                found.append(int(name))
        except OSError:
            continue  # closed while listing
    return found


class FixedWxt(WxtSim):
    """Sends the same temperature until told otherwise, so every reading is known exactly."""

    temperature = 11.5

    def fields(self) -> list[tuple[str, float, str]]:
        return [("Ta", self.temperature, "C"), ("Ua", 55.0, "P")]


class FixedSds011(Sds011Sim):
    values = (7.3, 13.6)

    def reading(self) -> tuple[float, float]:
        return self.values


class Case:
    """One protocol: its simulator, the driver config, how to switch the value it sends, and
    how many answers it sent (to compare with the readings after the replug)."""

    def __init__(self, protocol: str, tmp_path: Path) -> None:
        link = tmp_path / "ttyUSB0"
        backoff: dict[str, Any] = {"reopen_backoff_initial": 0.05, "reopen_backoff_max": 0.2}
        self.sim: Any
        self.metric = {"modbus": "temperature", "sds011": "pm2_5", "wxt": "temperature"}[protocol]
        if protocol == "modbus":
            self.unit = SimUnit(unit=1, model="static", registers={1: 215, 2: 456})
            self.sim = ModbusBusSim([self.unit], link=link)
            self.config: Config = make_config(
                port=str(link),
                protocol="modbus",
                modbus={"timeout": 0.3, "retries": 0,
                        "devices": [{"unit": 1, "interval": 0.05, "map": "xy_md02"}]},
                **backoff,
            )
            self.device = "serial:ttyUSB0/1"
            self.values = (21.5, 18.5)  # exact as register * 0.1 in binary floating point
        elif protocol == "sds011":
            self.sim = FixedSds011(link, period=0.05)
            self.config = make_config(
                port=str(link), protocol="sds011", sds011={"silence_timeout": 5.0}, **backoff
            )
            self.device = "serial:ttyUSB0/a160"
            self.values = (7.3, 2.2)
        else:
            self.sim = FixedWxt(link, mode="polled")
            self.config = make_config(
                port=str(link), protocol="wxt", wxt={"poll_interval": 0.05, "timeout": 0.3},
                **backoff,
            )
            self.device = "serial:ttyUSB0/0"
            self.values = (11.5, -4.5)

    @property
    def pty(self) -> str:
        """The pty slave the driver opens (through the link)."""
        port = self.sim.gateway_side if isinstance(self.sim, ModbusBusSim) else self.sim.port
        return str(port.slave_path)

    def switch_value(self) -> None:
        new = self.values[1]
        if isinstance(self.sim, ModbusBusSim):
            self.unit.registers[1] = round(new * 10) & 0xFFFF
        elif isinstance(self.sim, FixedSds011):
            self.sim.values = (new, 9.9)
        else:
            self.sim.temperature = new

    def answers(self) -> int:
        if isinstance(self.sim, ModbusBusSim):
            return int(self.sim.answers_sent)
        if isinstance(self.sim, FixedSds011):
            return int(self.sim.frames_sent)
        return int(self.sim.messages_sent)

    def silence(self) -> None:
        if isinstance(self.sim, ModbusBusSim):
            self.unit.faults.silent = True
        else:
            self.sim.faults.silent = True


@pytest.mark.usefixtures("crowded")
@pytest.mark.parametrize("protocol", ["modbus", "sds011", "wxt"])
async def test_port_above_select_ceiling_opens_and_reopens(
    tmp_path: Path, harness: Harness, protocol: str
) -> None:
    case = Case(protocol, tmp_path)
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    before, after = case.values

    def readings() -> list[Any]:
        return [r.value for r in harness.of(case.device, case.metric)]

    try:
        await case.sim.start()
        async with running(case.config, harness) as driver:
            await async_wait_for(lambda: len(readings()) >= 3, timeout=15, what="first readings")
            first_fds = descriptors_on(case.pty)
            assert len(first_fds) >= 2 and min(first_fds) >= SELECT_CEILING, first_fds

            case.sim.unplug()
            await async_wait_for(lambda: harness.ctx.counters.get("port_lost") == 1, timeout=10)
            await async_wait_for(
                lambda: harness.ctx.counters.get("port_reopen_failures", 0) >= 2, timeout=10
            )
            got_before = len(readings())
            case.switch_value()
            # Modbus and WXT answer only requests, which the driver sends once the port is open
            # again. An active-mode SDS011 talks by itself, and what it sends before the driver
            # has the port open is flushed by the open: it stays quiet until then.
            active = isinstance(case.sim, FixedSds011)
            if active:
                case.sim.faults.silent = True
            answers_at_replug = case.answers()
            case.sim.replug()
            await async_wait_for(lambda: harness.ctx.counters.get("port_reopened") == 1, timeout=10)
            if active:
                answers_at_replug = case.answers()
                case.sim.faults.silent = False
            await async_wait_for(
                lambda: readings().count(after) >= 3, timeout=15, what="readings after replug"
            )
            second_fds = descriptors_on(case.pty)
            assert len(second_fds) >= 2 and min(second_fds) >= SELECT_CEILING, second_fds
            assert driver.opened.is_set()

            case.silence()
            await async_wait_for(
                lambda: readings().count(after) == case.answers() - answers_at_replug,
                timeout=10,
                what="every answer sent after the replug read",
            )
            answered = case.answers() - answers_at_replug
    finally:
        await case.sim.stop()
        loop.set_exception_handler(previous_handler)

    values = readings()
    # exactly the values the device sent: the old one up to the unplug, the new one after
    assert values[:got_before] == [before] * got_before
    assert values[got_before:] == [after] * answered
    assert loop_errors == []
    assert harness.ctx.decode_errors == {}
    assert harness.ctx.counters["port_lost"] == 1 and harness.ctx.counters["port_reopened"] == 1
    # (the silence at the end may mark the device offline again)
    assert harness.statuses(case.device)[:2] == ["offline", "ok"]
    assert harness.log.count("warning", "port_unavailable") == 1
