"""Faults on the scenario's timetable, each an object that applies itself to the running city and
undoes itself when its duration ends (one-shot faults have nothing to undo).

A scenario's fault tables (simulators.city.scenario) are typed settings; `injection_for` pairs
each with the class that knows how to inject it, from the `INJECTIONS` table: a new fault kind
is a settings struct plus one class here.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Any, ClassVar

from simulators.city.scenario import (
    BleStall,
    ChargePointDisconnect,
    ClockJump,
    Corruption,
    Fault,
    SerialUnplug,
    UplinkOutage,
)

if TYPE_CHECKING:
    from simulators.city.runner import CityRun

__all__ = ["INJECTIONS", "Injection", "injection_for"]


class Injection:
    """One fault of the scenario. `begin` applies it and says what happened; `end` undoes it
    (called when `duration` has passed, or when the devices stop first)."""

    kind: ClassVar[str] = ""

    def __init__(self, fault: Any) -> None:
        self.fault = fault

    @property
    def duration(self) -> float | None:
        """Seconds until `end`; None for a one-shot fault."""
        return None

    async def begin(self, run: CityRun) -> str:
        raise NotImplementedError

    async def end(self, run: CityRun) -> None:
        return None


class UplinkOutageInjection(Injection):
    """mqtt: the platform's broker stops; file: the output folder becomes a file."""

    kind = "uplink_outage"
    fault: UplinkOutage

    @property
    def duration(self) -> float | None:
        return self.fault.duration

    async def begin(self, run: CityRun) -> str:
        f = self.fault
        if run.platform is not None:
            await asyncio.to_thread(run.platform.outage_begin)
            return f"platform broker stopped at {f.at:g} s for {f.duration:g} s"
        hidden = run.batches_dir.with_name("batches.outage")
        run.batches_dir.rename(hidden)
        run.batches_dir.write_text("the output folder is gone (simulated outage)\n")
        return f"file uplink folder unwritable at {f.at:g} s for {f.duration:g} s"

    async def end(self, run: CityRun) -> None:
        if run.platform is not None:
            await asyncio.to_thread(run.platform.outage_end)  # blocks until mosquitto listens
            return
        run.batches_dir.unlink()
        run.batches_dir.with_name("batches.outage").rename(run.batches_dir)


class CorruptionInjection(Injection):
    kind = "corrupt"
    fault: Corruption

    @property
    def duration(self) -> float | None:
        return self.fault.duration

    async def begin(self, run: CityRun) -> str:
        f = self.fault
        if f.target in ("lorawan", "all"):
            run.lora.corrupt_rate = f.rate
        if f.target in ("serial", "all"):
            run.serial.set_corruption(f.rate)
        return f"{f.rate:.0%} of {f.target} frames corrupted from {f.at:g} s for {f.duration:g} s"

    async def end(self, run: CityRun) -> None:
        run.lora.corrupt_rate = 0.0
        run.serial.set_corruption(0.0)


class SerialUnplugInjection(Injection):
    kind = "serial_unplug"
    fault: SerialUnplug

    def __init__(self, fault: Any) -> None:
        super().__init__(fault)
        self.pulled: list[Any] = []

    @property
    def duration(self) -> float | None:
        return self.fault.duration

    async def begin(self, run: CityRun) -> str:
        f = self.fault
        self.pulled = run.serial.unplug(f.ports)
        return f"{len(self.pulled)} serial port(s) unplugged at {f.at:g} s for {f.duration:g} s"

    async def end(self, run: CityRun) -> None:
        assert run.process is not None
        run.serial.replug(self.pulled, run.process.pid)


class BleStallInjection(Injection):
    kind = "ble_stall"
    fault: BleStall

    async def begin(self, run: CityRun) -> str:
        run.ble.stall(self.fault.mode)
        return f"BLE scanner stalled ({self.fault.mode}) at {self.fault.at:g} s"


class ChargePointDisconnectInjection(Injection):
    kind = "cp_disconnect"
    fault: ChargePointDisconnect

    async def begin(self, run: CityRun) -> str:
        run.ocpp.disconnect(self.fault.count)
        return f"{self.fault.count} charge points dropped at {self.fault.at:g} s"


class ClockJumpInjection(Injection):
    """The gateway runs under simulators.city.gwproc: its clock offset is re-read on SIGUSR1."""

    kind = "clock_jump"
    fault: ClockJump

    async def begin(self, run: CityRun) -> str:
        run.offset += self.fault.seconds
        (run.options.workdir / "clock-offset").write_text(f"{run.offset}\n")
        if run.process is not None:
            run.process.send_signal(signal.SIGUSR1)
        return f"gateway clock stepped {self.fault.seconds:+g} s at {self.fault.at:g} s"


INJECTIONS: dict[type, type[Injection]] = {
    UplinkOutage: UplinkOutageInjection,
    Corruption: CorruptionInjection,
    SerialUnplug: SerialUnplugInjection,
    BleStall: BleStallInjection,
    ChargePointDisconnect: ChargePointDisconnectInjection,
    ClockJump: ClockJumpInjection,
}


def injection_for(fault: Fault) -> Injection:
    return INJECTIONS[type(fault)](fault)
